"""Compile the quantization and pruning kernels for Hopper (sm_90) on a machine without a GPU.

    python benchmarks/compile_sm90.py [--all] [--out results/benchmarks]

Why: device time is scarce, and a kernel that does not compile for the GPU (inline PTX the
Triton interpreter never runs, shared memory over the limit, a launch the interpreter accepts
but the compiler rejects) would waste a device session. Each launcher is called on CPU tensors
with its kernel swapped for a recorder; the recorded launch is bound exactly as Triton's JIT
would bind it and compiled with `triton.compile` for `GPUTarget("cuda", 90, 32)` (ptxas ships
with Triton). Reported per config: registers, shared memory, local-memory spills, and whether
the SASS uses the Hopper paths (HGMMA/IGMMA tensor-core instructions, UTMALDG bulk-tensor
copies). By default one representative config per kernel variant; `--all` compiles every
config `quant_kernels.py` would time (about a minute per 100 on this CPU).

Uses Triton internals (`create_function_from_signature`, `JITFunction._pack_args`) that move
between releases: written against Triton 3.8; the GPU machine's 3.6 may still differ.
Exits 1 if any config fails to compile or needs more shared memory than a block may have. Writes compile-sm90.json under --out when given.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SMEM_LIMIT = 232448  # bytes of shared memory one block may use on sm_90 (227 KB); compiling does not check it
sys.path.insert(0, str(Path(__file__).resolve().parent))


class _Recorder:
    """Stands in for a JITFunction: `kernel[grid](*args, **kw)` records instead of launching."""

    def __init__(self):
        self.calls: list[tuple] = []

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.calls.append((grid, args, kwargs))


def _compile(fn, args, kwargs):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend
    from triton.runtime.jit import create_function_from_signature

    target = GPUTarget("cuda", 90, 32)
    backend = make_backend(target)
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    bound, spec, opts = binder(*args, **kwargs)
    options, signature, constexprs, attrs = fn._pack_args(backend, kwargs, bound, spec, opts)
    return triton.compile(ASTSource(fn, signature, constexprs, attrs), target=target, options=options.__dict__)


def _sass(kernel) -> str:
    from triton.backends.nvidia import compiler as nvc

    tool = Path(nvc.__file__).parent / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(kernel.asm["cubin"])
    try:
        out = subprocess.run([str(tool), "--dump-sass", "--dump-resource-usage", f.name],
                             capture_output=True, text=True, timeout=120)
        return out.stdout
    finally:
        os.unlink(f.name)


def compile_launch(module, kernel_name: str, launch) -> list[dict]:
    """Run `launch()` with `module.kernel_name` recorded, compile each launch, summarize it."""
    real = getattr(module, kernel_name)
    rec = _Recorder()
    setattr(module, kernel_name, rec)
    try:
        launch()
    finally:
        setattr(module, kernel_name, real)
    rows = []
    for grid, args, kwargs in rec.calls:
        t0 = time.perf_counter()
        k = _compile(real, args, kwargs)
        sass = _sass(k)
        reg = re.search(r"REG:(\d+)", sass)
        rows.append({"kernel": kernel_name, "grid": list(grid), "regs": int(reg.group(1)) if reg else None,
                     "shared_bytes": k.metadata.shared, "spills": bool(re.search(r"\bSTL\b", sass)),
                     "tensor_core": sorted(set(re.findall(r"\b([HIQ]GMMA|HMMA|IMMA)\b", sass))),
                     "tma": "UTMALDG" in sass, "seconds": round(time.perf_counter() - t0, 2)})
    return rows


def configs(full: bool):
    """(label, module, kernel name, launch thunk) for every config to compile."""
    import torch

    import quant_kernels as qk
    from slimbench.methods.quant.kernels import codebook, w4a16, w8a8

    out = []
    shapes = qk.SHAPES if full else [(4096, 768, 3072), (1, 4096, 11008), (16, 4096, 11008)]
    for m, k, n in shapes:
        a = torch.zeros(m, k, dtype=torch.int8)
        b = torch.zeros(n, k, dtype=torch.int8)
        sa, sb = torch.ones(m), torch.ones(n)
        cfgs = [w8a8.default_config(m, n, k)] + (qk.w8a8_alternatives(w8a8.GemmConfig, m) if full else
                                                 [w8a8.GemmConfig(kernel="tma")] if m >= 64 else [])
        for cfg in cfgs:
            name = "_int8_gemm_tma_kernel" if cfg.kernel == "tma" else "_int8_gemm_kernel"
            out.append((f"w8a8 {m}x{k}x{n} {cfg}", w8a8, name,
                        lambda a=a, b=b, sa=sa, sb=sb, cfg=cfg: w8a8.int8_gemm(a, b, sa, sb, None, torch.float16, cfg)))
        # what quant_kernels.correctness() launches: exact fp32 output (the 128x256 TMA tile only with fp16)
        for cfg, dt in ((w8a8.default_config(m, n, k), torch.float32),
                        (w8a8.GemmConfig(128, 128, 128, 8, 8, 3, "tma"), torch.float32),
                        (w8a8.GemmConfig(kernel="tma"), torch.float16)):
            name = "_int8_gemm_tma_kernel" if cfg.kernel == "tma" else "_int8_gemm_kernel"
            out.append((f"w8a8 {str(dt)[6:]} out {m}x{k}x{n} {cfg}", w8a8, name,
                        lambda a=a, b=b, sa=sa, sb=sb, cfg=cfg, dt=dt: w8a8.int8_gemm(a, b, sa, sb, None, dt, cfg)))
        if m >= 64:  # the fused-MLP epilogue (w8a8_fuse): GELU, then int8 with the consumer's scale
            for cfg in (w8a8.default_config(m, n, k, gelu=True), w8a8.GemmConfig(128, 128, 128, 8, 8, 3, "tma")):
                name = "_int8_gemm_tma_kernel" if cfg.kernel == "tma" else "_int8_gemm_kernel"
                out.append((f"w8a8 +gelu+int8 out {m}x{k}x{n} {cfg}", w8a8, name,
                            lambda a=a, b=b, sa=sa, sb=sb, cfg=cfg: w8a8.int8_gemm(
                                a, b, sa, sb, None, torch.float16, cfg, act="gelu", out_scale=torch.ones(()))))
        x = torch.zeros(m, k, dtype=torch.float16)
        out.append((f"w8a8.quantize_act {m}x{k}", w8a8, "_quant_act_kernel", lambda x=x: w8a8.quantize_act(x)))
        qw = torch.zeros(n, k // 2, dtype=torch.uint8)
        sc = torch.ones(n, k // 128, dtype=torch.float16)
        cfgs = [w4a16.default_config(m, n, k, 128)] + (qk.w4a16_alternatives(w4a16.W4Config, m) if full else [])
        for cfg in cfgs:
            name = "_w4a16_gemv_kernel" if cfg.kernel == "gemv" else "_w4a16_dot_kernel"
            out.append((f"w4a16 {m}x{k}x{n} {cfg}", w4a16, name,
                        lambda x=x, qw=qw, sc=sc, cfg=cfg: w4a16.w4a16_linear(x, qw, sc, None, 128, None, cfg)))
        if m > 16:
            continue
        for bits in (2, 4):
            codes = torch.zeros(n, k * bits // 8, dtype=torch.uint8)
            table = torch.randn(2 ** bits, 1).half()
            cfgs = [codebook.default_config(m, n, k, bits)] + (
                qk.codebook_alternatives(codebook.GemvConfig, m, bits) if full else [])
            for cfg in cfgs:
                name = {"lanes": "_codebook_lanes_kernel", "dot": "_codebook_dot_kernel",
                        "rows": "_codebook_gemv_kernel"}[cfg.kernel]
                out.append((f"codebook {bits}-bit {m}x{k}x{n} {cfg}", codebook, name,
                            lambda x=x, codes=codes, table=table, bits=bits, cfg=cfg:
                            codebook.codebook_gemv(x, codes, table, bits, None, cfg)))
    # the W8A8 fused producers (issue 23) at BERT-base batch 32 x 128: LayerNorm (+ residual) writing
    # int8 codes, and the stacked Q|K|V GEMM (N = 2304) as the CPU and the Hopper defaults pick it
    from slimbench.methods.quant.kernels import fused_producers as fp
    for n, dt, res in ((768, torch.float16, True), (768, torch.float16, False), (4096, torch.bfloat16, True)):
        x = torch.zeros(4096, n, dtype=dt)
        out.append((f"fused layernorm_quant 4096x{n} {str(dt)[6:]} residual={res}", fp, "_layernorm_quant_kernel",
                    lambda x=x, res=res: fp.layernorm_quant(x, torch.ones(x.shape[1], dtype=x.dtype),
                                                            torch.zeros(x.shape[1], dtype=x.dtype), 1e-12,
                                                            x if res else None)))
    qkv = fp.FusedWeights(torch.zeros(2304, 768, dtype=torch.int8), torch.ones(2304), torch.zeros(2304), (768,) * 3,
                          None)
    xq, xs = torch.zeros(4096, 768, dtype=torch.int8), torch.ones(4096)
    out.append(("fused qkv 4096x768x2304 (default, pointer tiles)", w8a8, "_int8_gemm_kernel",
                lambda: fp.fused_linear(None, qkv, (xq, xs), torch.float16)))
    cfg = w8a8.default_config(4096, 2304, 768, tma=True)
    out.append((f"fused qkv 4096x768x2304 (Hopper default) {cfg}", w8a8, "_int8_gemm_tma_kernel",
                lambda cfg=cfg: w8a8.int8_gemm(xq, qkv.weight, xs, qkv.weight_scale, qkv.bias, torch.float16, cfg)))
    from slimbench.methods.prune.kernels import blocksparse, nm
    for m, k, n in ([(4096, 768, 3072), (1, 4096, 11008), (16, 4096, 11008)] if not full else
                    [(8192, 8192, 8192), (4096, 768, 3072), (4096, 3072, 768), (1, 4096, 11008), (16, 4096, 11008)]):
        x = torch.zeros(m, k, dtype=torch.float16)
        v, p = torch.zeros(n, k // 2, dtype=torch.float16), torch.zeros(n, k // 8, dtype=torch.uint8)
        out.append((f"2:4 nm24 {m}x{k}x{n}", nm, "_nm24_kernel", lambda x=x, v=v, p=p: nm.nm24_linear(x, v, p)))
    for b in (32, 64):
        x = torch.zeros(4096, 4096, dtype=torch.float16)
        vals = torch.zeros(16, b, b, dtype=torch.float16)
        crow, col = torch.zeros(4096 // b + 1, dtype=torch.int32), torch.zeros(16, dtype=torch.int32)
        out.append((f"block-sparse {b}x{b} 4096^3", blocksparse, "_bsr_kernel",
                    lambda x=x, vals=vals, crow=crow, col=col: blocksparse.bsr_linear(x, vals, crow, col)))
    return out


def nvcc_rows() -> list[dict]:
    """The CUDA C++ kernels (the 2:4 sparse-MMA GEMM's torch-free part, `nm_sparse_mma.KERNEL_SRC`)
    compiled by nvcc for sm_90a: per instantiation, registers, spills, shared memory per block, and
    the tensor-core instructions in its SASS (HMMA.SP = the sparse tensor cores; cuobjdump from
    Triton's package). [] without nvcc; raises if it does not compile or the SASS lacks HMMA.SP."""
    import shutil

    nvcc = shutil.which("nvcc")
    if nvcc is None:
        print("skip CUDA C++ kernels: no nvcc on PATH")
        return []
    from triton.backends.nvidia import compiler as nvc

    from slimbench.methods.prune.kernels import nm_sparse_mma as sm
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        src, obj = Path(tmp) / "nm24_mma.cu", Path(tmp) / "nm24_mma.o"
        src.write_text(sm.KERNEL_SRC)
        proc = subprocess.run([nvcc, "-c", "-O3", "-gencode=arch=compute_90a,code=sm_90a", "-Xptxas", "-v", str(src),
                               "-o", str(obj)], capture_output=True, text=True, timeout=600)
        if proc.returncode:
            raise RuntimeError(f"nvcc: {proc.stderr[-1500:]}")
        tool = Path(nvc.__file__).parent / "bin" / "cuobjdump"
        sass = subprocess.run([str(tool), "--dump-sass", str(obj)], capture_output=True, text=True,
                              timeout=120).stdout if tool.exists() else ""
    seconds = round(time.perf_counter() - t0, 2)
    rows = []
    for fn in re.split(r"Compiling entry function ", proc.stdout + proc.stderr)[1:]:
        name = fn.split("'")[1]
        tiles = tuple(int(v) for v in re.findall(r"Li(\d+)E", name))  # BN, BM, warps N, warps M, stages
        config = next(c for c, t in sm.CONFIGS.items() if t == tiles)
        spill = re.search(r"(\d+) bytes spill stores", fn)
        body = next((part for part in sass.split("Function : ")[1:] if part.startswith(name)), "")
        tc = sorted(set(re.findall(r"\b((?:[HIQ]GMMA|HMMA|IMMA)(?:\.SP)?)\.", body)))
        if sass and "HMMA.SP" not in tc:
            raise RuntimeError(f"{name}: no HMMA.SP in the SASS (tensor-core instructions: {tc or 'none'})")
        rows.append({"kernel": "nm24_mma_kernel", "grid": [],
                     "regs": int(re.search(r"Used (\d+) registers", fn).group(1)),
                     "shared_bytes": sm.smem_bytes(config), "spills": bool(spill and int(spill.group(1))),
                     "tensor_core": tc if sass else ["(no cuobjdump)"], "tma": False, "seconds": seconds,
                     "label": f"2:4 sparse-MMA (nvcc sm_90a) config {config} {sm.CONFIGS[config]} "
                              f"{'bf16' if 'Lb1E' in name else 'fp16'}"})
    if not rows:
        raise RuntimeError(f"nvcc -Xptxas -v reported no kernels: {proc.stderr[-500:]}")
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--all", action="store_true", help="every config quant_kernels.py would time")
    ap.add_argument("--out", default=None, help="folder for compile-sm90.json")
    args = ap.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        print("compile_sm90: unset TRITON_INTERPRET (the interpreter replaces the kernels being compiled)")
        return 2
    from e2e_bert_w8a8 import import_slimbench
    import_slimbench()
    import triton

    rows, failed = [], 0
    for label, module, name, launch in configs(args.all):
        try:
            for row in compile_launch(module, name, launch):
                if row["shared_bytes"] > SMEM_LIMIT:
                    raise RuntimeError(f"needs {row['shared_bytes']} B of shared memory; sm_90 allows {SMEM_LIMIT}")
                rows.append({"config": label, "ok": True, **row})
                print(f"ok   {label}: regs {row['regs']} smem {row['shared_bytes']} spills {row['spills']} "
                      f"tc {','.join(row['tensor_core']) or '-'} tma {row['tma']}", flush=True)
        except Exception as exc:
            failed += 1
            rows.append({"config": label, "ok": False, "error": f"{type(exc).__name__}: {str(exc)[:500]}"})
            print(f"FAIL {label}: {type(exc).__name__}: {str(exc)[:300]}", flush=True)
    try:  # CUDA C++ (nvcc), beside the Triton kernels
        for row in nvcc_rows():
            label = row.pop("label")
            rows.append({"config": label, "ok": True, **row})
            print(f"ok   {label}: regs {row['regs']} smem {row['shared_bytes']} spills {row['spills']} "
                  f"tc {','.join(row['tensor_core']) or '-'}", flush=True)
    except Exception as exc:
        failed += 1
        rows.append({"config": "2:4 sparse-MMA (nvcc sm_90a)", "ok": False,
                     "error": f"{type(exc).__name__}: {str(exc)[:500]}"})
        print(f"FAIL 2:4 sparse-MMA (nvcc sm_90a): {type(exc).__name__}: {str(exc)[:300]}", flush=True)
    if args.out:
        path = Path(args.out) / "compile-sm90.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"triton": triton.__version__, "target": "cuda sm_90", "rows": rows}, indent=1))
        print(f"wrote {path}")
    print(f"{len(rows)} launches compiled, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
