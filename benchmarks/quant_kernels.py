"""Correctness, then speed, of the quantization Triton kernels against fp16 `F.linear` on a GPU.

    python benchmarks/quant_kernels.py [--quick] [--reps 50] [--no-flush] [--out results]
    TRITON_INTERPRET=1 python benchmarks/quant_kernels.py --smoke --out /tmp/x   # no GPU: the code paths

Checks each kernel and kernel variant against its torch reference first (a failed or raising
check is recorded and makes the script exit 1 at the end), then times, at the shapes of
../shared/notes/gpu-anchors.md, CUDA-event medians after warm-up: the W8A8 int8 GEMM (plain and
persistent-TMA variants) alone and with per-token activation quantization (and `torch._int_mm`
where it runs), W4A16 g128, and the 2-/4-bit codebook GEMV (M <= 16). Without autotuning, each
kernel is timed with its default config and, unless --quick, with a sweep of alternatives; each
config's output is compared with a reference just before it is timed, so a wrong one is
reported and never timed; the best is recorded beside the default so defaults can be tuned.
L2 is flushed before every timed call (weights of small-M shapes fit in L2 and would otherwise
look free). Writes results/quant-kernels-<device-name>.json after the checks and again after
each shape (target shapes first; `complete` says whether all ran), so a timeout keeps what was
measured. Exits with a message on a machine without CUDA. Works without `pip install` of
slimbench (it maps the repo).
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_common import median_ms, record_path, rel_err, start  # noqa: E402

DEV = "cuda"  # "cpu" under --smoke (the Triton interpreter)
# The target shapes first: results are saved after each shape, so a timeout loses only the tail.
SHAPES = [(8192, 8192, 8192), (1, 4096, 11008), (16, 4096, 11008), (4096, 768, 3072), (4096, 3072, 768),
          (16384, 4096, 4096), (32, 4096, 4096)]
SMOKE_SHAPES = [(64, 128, 96), (1, 1024, 64), (16, 256, 48)]  # --smoke: every code path, tiny


def correctness(torch, F) -> dict[str, dict]:
    """Each kernel and each module's CUDA dispatch against the CPU-path reference."""
    from torch import nn

    from slimbench.methods.quant.kernels import codebook, w4a16, w8a8
    from slimbench.methods.quant.kmeans import CodebookLinear
    from slimbench.methods.quant.linear import QuantLinear
    from slimbench.methods.quant.w8a8 import W8A8Linear, int8_matmul, quantize_per_token

    out: dict[str, dict] = {}
    torch.manual_seed(0)

    def record(name, err_of, tol):
        """`err_of()` computes the error; a kernel that raises (compile error, bad launch) is
        recorded as failed with its message instead of ending the whole check."""
        try:
            err = float(err_of())
            out[name] = {"rel_err": err, "tol": tol, "ok": bool(err <= tol)}
        except Exception as exc:
            out[name] = {"rel_err": None, "tol": tol, "ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}

    shapes = [(1, 1024, 64), (20, 128, 96)] if DEV == "cpu" else [(1, 4096, 1024), (77, 768, 3072), (512, 3072, 768)]
    for m, k, n in shapes:
        x = torch.randn(m, k, device=DEV, dtype=torch.float16)
        lin = nn.Linear(k, n).to(DEV)
        xq, xs = w8a8.quantize_act(x)
        xq_ref, xs_ref = quantize_per_token(x.float().cpu())
        record(f"w8a8.quantize_act {m}x{k}", lambda: (xq.cpu().int() - xq_ref.int()).abs().max(), 1.0)
        q = W8A8Linear.from_linear(lin, None)
        ref = (int8_matmul(xq.cpu(), q.weight.cpu()).float() * xs.cpu()[:, None] * q.weight_scale.cpu()[None, :]
               + q.bias.cpu())
        # fp32 output is exact; the 128x256 TMA tile only fits shared memory with a 16-bit output
        for cfg, dt, tol in [(None, torch.float32, 1e-5), (w8a8.GemmConfig(128, 128, 128, 8, 8, 3, "tma"), torch.float32,
                                                            1e-5), (w8a8.GemmConfig(kernel="tma"), torch.float16, 2e-3)]:
            record(f"w8a8.int8_gemm {cfg.kernel if cfg else 'default'} {str(dt)[6:]} {m}x{k}x{n}",
                   lambda: rel_err(w8a8.int8_gemm(xq, q.weight, xs, q.weight_scale, q.bias, dt, cfg).cpu(), ref), tol)
        with torch.no_grad():
            record(f"W8A8Linear cuda vs cpu {m}x{k}x{n}", lambda: rel_err(q(x).cpu(), q.cpu()(x.cpu().float())), 2e-2)
        W = w4a16.W4Config
        for sym in (True, False):
            ql = QuantLinear.from_linear(lin, 4, "group", 128, sym)
            ref = F.linear(x, ql.dequantize().half(), ql.bias.half())
            def got():
                return w4a16.w4a16_linear(x, ql.qweight, ql.scale, ql.zero, 128, ql.bias)
            record(f"w4a16 g128 sym={sym} {m}x{k}x{n}", lambda: rel_err(got(), ref), 1e-2)
            # each kernel explicitly (the default picks one): PTX decode in fp16 and bf16, Triton decode in fp16
            variants = [W(16, 64, 256, 1, 4, 4), W(1, 32, 2048, 1, 4, 1, "gemv"),
                        W(16, 64, 128, 2, 4, 4, "dot", False), W(1, 32, 1024, 1, 4, 1, "gemv", False)]
            for cfg in variants if m == 1 else []:
                for dt in (torch.float16, torch.bfloat16) if cfg.asm else (torch.float16,):
                    ref = F.linear(x.to(dt).float(), ql.dequantize().to(dt).float(), ql.bias.float())
                    record(f"w4a16 {cfg.kernel} asm={cfg.asm} bk={cfg.block_k} split={cfg.split_k} sym={sym} "
                           f"{str(dt)[6:]} {m}x{k}x{n}",
                           lambda: rel_err(w4a16.w4a16_linear(x.to(dt), ql.qweight, ql.scale, ql.zero, 128, ql.bias, cfg),
                                       ref), 1e-2)
        if m <= 16:
            Cg = codebook.GemvConfig
            for bits in (2, 4):
                cl = CodebookLinear.from_linear(lin, bits, 1, 5, 0)
                ref = F.linear(x, cl.dequantize().half(), cl.bias.half())
                with torch.no_grad():
                    record(f"codebook_gemv {bits}-bit {m}x{k}x{n}", lambda: rel_err(cl(x), ref), 1e-2)
                dec = "select" if bits == 2 else "gather"
                variants = [Cg(16, 4096 // bits, 2, 1, "lanes", dec), Cg(64, 256, 4, 3, "dot", dec, 16)]
                if bits == 2:  # 16-bit partial sums; the where-select spelling
                    variants += [Cg(16, 2048, 2, 1, "lanes", "select16"), Cg(64, 256, 4, 3, "dot", dec, 16, False)]
                for cfg in variants:
                    for dt in (torch.float16, torch.bfloat16) if cfg.asm else (torch.float16,):
                        ref = F.linear(x.to(dt).float(), cl.dequantize().to(dt).float(), cl.bias.float())
                        record(f"codebook {bits}-bit {cfg.kernel} {cfg.decode} asm={cfg.asm} {str(dt)[6:]} "
                               f"{m}x{k}x{n}", lambda: rel_err(codebook.codebook_gemv(x.to(dt), cl.codes, cl.codebook,
                                                                                  bits, cl.bias, cfg), ref), 1e-2)
    return out


def w8a8_alternatives(G, m: int) -> list:
    """Sweep for the int8 GEMM beside the default: plain tiles, and from M >= 64 the persistent
    TMA kernel (wgmma wants 64-row tiles)."""
    alts = [G(128, 256, 128, 8, 8, 3), G(128, 128, 128, 8, 4, 4), G(256, 128, 128, 8, 8, 3),
            G(64, 128, 128, 8, 4, 4), G(64, 256, 128, 8, 8, 3), G(16, 128, 256, 8, 4, 4)]
    if m >= 64:
        alts += [G(128, 256, 128, 8, 8, 3, "tma"), G(128, 256, 64, 8, 8, 4, "tma"),
                 G(128, 128, 128, 8, 8, 4, "tma"), G(128, 128, 128, 8, 4, 4, "tma"),
                 G(256, 128, 64, 8, 8, 3, "tma")]
    return alts


def w4a16_alternatives(W, m: int) -> list:
    """Sweep for W4A16 g128 beside the default: split-K tiles (the previous default family, now
    with the magic-number decode), single-launch dot tiles (BLOCK_N >= 16 * num_warps), the
    Triton-spelled decode, and at M <= 4 the gemv kernel. Short: each entry is a compile."""
    if m > 64:
        return [W(128, 128, 64, 1, 8, 3), W(128, 256, 64, 1, 8, 3), W(64, 128, 128, 1, 4, 4),
                W(128, 128, 128, 1, 8, 3)]
    bm = min(64, max(16, 1 << (m - 1).bit_length()))
    alts = [W(bm, 64, 128, 2, 4, 4), W(bm, 64, 128, 4, 4, 4),
            W(bm, 64, 256, 1, 4, 4), W(bm, 64, 256, 1, 2, 4), W(bm, 32, 256, 1, 2, 4), W(bm, 64, 128, 1, 4, 4),
            W(bm, 16, 256, 1, 1, 4), W(bm, 128, 256, 1, 4, 3), W(bm, 64, 256, 1, 4, 4, "dot", False)]
    if m <= 4:
        g = 1 if m == 1 else (2 if m == 2 else 4)
        alts += [W(g, 32, 2048, 1, 4, 1, "gemv"), W(g, 16, 2048, 1, 2, 1, "gemv"), W(g, 32, 1024, 1, 4, 1, "gemv"),
                 W(g, 64, 2048, 1, 8, 1, "gemv"), W(g, 32, 4096, 1, 4, 1, "gemv"),
                 W(g, 32, 2048, 1, 4, 1, "gemv", False)]
    return alts


def codebook_alternatives(Cg, m: int, bits: int) -> list:
    """Sweep for the codebook GEMV: the old per-row kernel, the lanes kernel (M <= 4), the dot kernel."""
    dec = "select" if bits == 2 else "gather"
    chunk = 4096 // bits  # lanes: codes per row per chunk
    alts = [Cg(32, 256, 4, 2)]
    if m <= 4:
        g = 1 if m == 1 else 4
        alts += [Cg(16, chunk, 2, 1, "lanes", dec, g), Cg(32, chunk, 4, 1, "lanes", dec, g),
                 Cg(64, chunk, 8, 1, "lanes", dec, g), Cg(16, 2 * chunk, 2, 1, "lanes", dec, g)]
        if bits == 2:  # 16-bit partial sums per word: fewer instructions, slightly less exact
            alts += [Cg(16, chunk, 2, 1, "lanes", "select16", g), Cg(32, chunk, 4, 1, "lanes", "select16", g)]
    alts += [Cg(64, 256, 4, 3, "dot", dec, 16), Cg(64, 128, 4, 3, "dot", dec, 16), Cg(32, 256, 2, 3, "dot", dec, 16),
             Cg(128, 256, 4, 3, "dot", dec, 16)]
    if bits == 2:
        alts += [Cg(64, 256, 4, 3, "dot", "select", 16, False)]
    return alts


def checked(make, ref):
    """`make` whose callables are compared with `ref` once before timing: a wrong config raises,
    which the sweep reports and skips (the defaults are checked in `correctness`)."""
    def make_checked(cfg):
        fn = make(cfg)
        err = rel_err(fn(), ref)
        if not err <= 1e-2:
            print(f"  {cfg}: wrong result, rel err {err:.1e}; not timed", flush=True)
            raise ValueError(f"wrong result, rel err {err:.1e}")
        return fn
    return make_checked


def timings(torch, F, reps: int, flush: bool, quick: bool, rows: list[dict], save=lambda: None) -> list[dict]:
    """Append one entry per (kernel, shape) to `rows`, calling `save()` after each shape."""
    from slimbench.methods.common import storage as packing
    from slimbench.methods.quant.kernels import codebook, w4a16, w8a8

    def timed(fn):
        return median_ms(fn, torch, reps, DEV, flush)

    def sweep(name, shape, base_ms, make, default_cfg, alternatives):
        """Time `make(cfg)` for the default config and (unless quick) each alternative."""
        entry = {"kernel": name, "shape": shape, "fp16_ms": base_ms, "default_config": default_cfg.__dict__}
        try:
            ms = timed(make(default_cfg))
            entry.update(ms=ms, speedup=base_ms / ms)
        except Exception as exc:  # a wrong or failing default: record it, still time the alternatives
            print(f"  {name} default {default_cfg}: {type(exc).__name__}: {str(exc)[:200]}", flush=True)
            ms = float("inf")
            entry.update(ms=None, speedup=None, default_error=f"{type(exc).__name__}: {str(exc)[:300]}")
        best_cfg, best = default_cfg, ms
        for cfg in ([] if quick else alternatives):
            try:
                t = timed(make(cfg))
            except Exception as exc:  # a config can exceed shared memory: skip it, keep going
                print(f"  {name} {cfg}: {type(exc).__name__}", flush=True)
                continue
            if t < best:
                best_cfg, best = cfg, t
        if best == float("inf"):
            entry.update(best_config=None, best_ms=None, best_speedup=None)
        else:
            entry.update(best_config=best_cfg.__dict__, best_ms=best, best_speedup=base_ms / best)
        rows.append(entry)
        print(f"  {name:22s} {ms * 1e3:9.1f}us  {base_ms / ms:5.2f}x  (best {base_ms / best:5.2f}x)", flush=True)

    for m, k, n in SMOKE_SHAPES if DEV == "cpu" else SHAPES:
        shape = f"{m}x{k}x{n}"
        x = torch.randn(m, k, device=DEV, dtype=torch.float16)
        w = torch.randn(n, k, device=DEV, dtype=torch.float16) / k ** 0.5
        base = timed(lambda: F.linear(x, w))
        print(f"{shape}: fp16 F.linear {base * 1e3:.1f}us", flush=True)
        rows.append({"kernel": "fp16 F.linear", "shape": shape, "ms": base, "speedup": 1.0})

        wq = torch.randint(-127, 128, (n, k), device=DEV, dtype=torch.int8)
        ws = torch.rand(n, device=DEV) / 100
        xq, xs = w8a8.quantize_act(x)
        ref8 = (torch._int_mm(xq, wq.t()).float() * xs[:, None] * ws[None, :]).half() if m > 16 else \
            ((xq.float() @ wq.float().t()) * xs[:, None] * ws[None, :]).half()
        sweep("w8a8 int8_gemm", shape, base,
              checked(lambda c: (lambda: w8a8.int8_gemm(xq, wq, xs, ws, None, torch.float16, c)), ref8),
              w8a8.default_config(m, n, k, tma=DEV == "cuda" and w8a8._has_tma(torch.cuda.current_device())
                                  and w8a8.tma_ok(xq, wq, torch.float16)),  # what int8_gemm picks by itself
              w8a8_alternatives(w8a8.GemmConfig, m))

        def quant_gemm():
            a, a_scale = w8a8.quantize_act(x)
            return w8a8.int8_gemm(a, wq, a_scale, ws, None, torch.float16)
        ms = timed(quant_gemm)
        rows.append({"kernel": "w8a8 quant+gemm", "shape": shape, "ms": ms, "speedup": base / ms})
        print(f"  {'w8a8 quant+gemm':22s} {ms * 1e3:9.1f}us  {base / ms:5.2f}x", flush=True)
        if m > 16:
            ms = timed(lambda: torch._int_mm(xq, wq.t()))
            rows.append({"kernel": "torch._int_mm (int32 out, no epilogue)", "shape": shape, "ms": ms,
                         "speedup": base / ms})

        codes = torch.randint(0, 16, (n, k), device=DEV, dtype=torch.uint8)
        qw = packing.pack(codes, 4)
        sc = (torch.rand(n, k // 128, device=DEV) / 100).half()
        ref4 = F.linear(x, ((codes.view(n, k // 128, 128).half() - 8) * sc[..., None]).view(n, k))
        sweep("w4a16 g128", shape, base,
              checked(lambda c: (lambda: w4a16.w4a16_linear(x, qw, sc, None, 128, None, c)), ref4),
              w4a16.default_config(m, n, k, 128), w4a16_alternatives(w4a16.W4Config, m))

        if m <= 16:
            for bits in (4, 2):
                cb = torch.randn(2 ** bits, 1, device=DEV).half()
                idx = torch.randint(0, 2 ** bits, (n, k), device=DEV)
                cq = packing.pack(idx, bits)
                refc = F.linear(x, cb[idx, 0])
                sweep(f"codebook_gemv {bits}-bit", shape, base,
                      checked(lambda c, cq=cq, cb=cb, bits=bits:
                              (lambda: codebook.codebook_gemv(x, cq, cb, bits, None, c)), refc),
                      codebook.default_config(m, n, k, bits), codebook_alternatives(codebook.GemvConfig, m, bits))
                del idx, refc
        del x, w, wq, codes, qw, ref4, ref8
        if DEV == "cuda":
            torch.cuda.empty_cache()
        save()
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="default configs only (no sweep)")
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--no-flush", action="store_true", help="do not flush L2 between timed calls")
    ap.add_argument("--out", default=str(ROOT / "results"))
    ap.add_argument("--smoke", action="store_true", help="run every check and sweep entry on tiny shapes on "
                    "the CPU through the Triton interpreter (needs TRITON_INTERPRET=1 in the environment): "
                    "catches errors in GPU-only code before a device session; timings are meaningless")
    args = ap.parse_args(argv)
    import torch
    import torch.nn.functional as F

    global DEV
    name, code = start("quant_kernels", args.smoke, torch)
    if name is None:
        return code
    DEV = "cpu" if args.smoke else "cuda"
    import triton

    print(f"{name}  torch {torch.__version__}  triton {triton.__version__}", flush=True)
    checks = correctness(torch, F)
    bad = [k for k, v in checks.items() if not v["ok"]]
    result = {"device": name, "torch": torch.__version__, "triton": triton.__version__,
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "reps": args.reps, "l2_flush": not args.no_flush, "correctness": checks, "timings": [],
              "complete": False}
    out = record_path(args.out, "quant-kernels", name)

    def save():
        out.write_text(json.dumps(result, indent=1))
    save()
    for k, v in checks.items():
        err = "n/a" if v["rel_err"] is None else f"{v['rel_err']:.2e}"
        print(f"  {'ok ' if v['ok'] else 'BAD'} {k}: rel_err {err} (tol {v['tol']:.0e})"
              + (f" {v['error']}" if v.get("error") else ""), flush=True)
    # Timings run even when a check failed: each timed config is compared with a reference
    # first (`checked`), so a wrong kernel is reported and skipped, never timed.
    timings(torch, F, args.reps, not args.no_flush, args.quick, result["timings"], save)
    result["complete"] = True
    save()
    print(f"wrote {out}" + (f"; {len(bad)} correctness check(s) FAILED: {', '.join(bad)}" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
