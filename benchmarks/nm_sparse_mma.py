"""Correctness, then speed, of the 2:4 sparse-MMA CUDA kernel (`mma.sp`, issue 24) on a GPU.

    python benchmarks/nm_sparse_mma.py [--reps 30] [--out results/benchmarks]
    TRITON_INTERPRET=1 python benchmarks/nm_sparse_mma.py --smoke --out /tmp/x   # no GPU: the code paths

1. Build: `nm_sparse_mma.build()` (torch's load_inline: nvcc + ninja on the GPU machine), timed.
2. Correctness first: at every timed shape, every tile config against fp16 `F.linear` with the
   dense weight and a bias (and bf16 at 4096x768x3072); a config that fails is recorded and never
   timed, and the script exits 1.
3. Times (CUDA-event medians, L2 flushed before each call), shapes MxKxN as NOTES-gpu.md writes them:
   dense fp16 `F.linear`, the Triton `nm24_linear` (expanded in registers, dense tensor cores) and
   each sparse-MMA config, at 8192^3, 4096x768x3072, 4096x3072x768, 1x4096x11008 and 16x4096x11008.
   Each entry names its fastest config and the ratios to dense and to Triton; `measured_faster`
   lists the (N, K, M) rows for `nm_sparse_mma.MEASURED_FASTER` (the layer's `auto` choice).
Writes results/benchmarks/nm-sparse-mma-<device>.json after each shape. Under --smoke (CPU) the
"kernel" is the layout emulator (`decode_emulated`) feeding F.linear and the Triton kernel runs
through the interpreter: every path but the CUDA one, on tiny shapes. Works without `pip install`.
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_common import median_ms, record_path, rel_err, start  # noqa: E402

DEV = "cuda"
SHAPES = [(8192, 8192, 8192), (4096, 768, 3072), (4096, 3072, 768), (1, 4096, 11008), (16, 4096, 11008)]
SMOKE_SHAPES = [(8, 128, 64), (1, 64, 200)]
TARGETS = {(8192, 8192, 8192): 1.4, (4096, 768, 3072): 1.1}  # over dense fp16 (NOTES-gpu.md, pruning kernels)
TOL = 2e-2


def two_of_four(torch, n: int, k: int):
    from slimbench.methods.prune.masks import nm_keep
    w = torch.randn(n, k, device=DEV) / k ** 0.5
    return w * nm_keep(w, 2, 4)


def sparse_mma(sm, smoke: bool):
    """The call under test: the CUDA kernel, or (--smoke) the emulated layout into F.linear."""
    if not smoke:
        return sm.nm24_sparse_mma_linear
    import torch.nn.functional as F

    def emulated(x, packed, bias=None, config=None):
        return F.linear(x, sm.decode_emulated(packed).to(x.dtype), None if bias is None else bias.to(x.dtype))
    return emulated


def shape_entry(torch, F, sm, nm, m: int, k: int, n: int, reps: int, smoke: bool) -> dict:
    from slimbench.methods.common import storage

    run = sparse_mma(sm, smoke)
    entry = {"shape": f"{m}x{k}x{n}", "target": TARGETS.get((m, k, n)), "configs": {}}
    w = two_of_four(torch, n, k)
    values, positions = storage.to_nm(w, 2, 4)
    t0 = time.perf_counter()
    packed = sm.to_sparse_mma(values, positions, k, torch.float16)
    entry["convert_s"] = round(time.perf_counter() - t0, 3)
    x = torch.randn(m, k, device=DEV, dtype=torch.float16)
    b = torch.randn(n, device=DEV) / 4
    wh = w.half()
    ref = F.linear(x, wh, b.half())
    for cfg in sm.CONFIGS:
        row = entry["configs"][str(cfg)] = {"tiles": sm.CONFIGS[cfg]}
        try:
            row["rel_err"] = rel_err(run(x, packed, b, cfg), ref)
            row["ok"] = row["rel_err"] < TOL
        except Exception as exc:  # recorded, never timed
            row.update(ok=False, error=f"{type(exc).__name__}: {str(exc)[:300]}")
    if (m, k, n) == (4096, 768, 3072) or smoke:  # bf16 once: the other instantiation
        xb, pb = x.bfloat16(), sm.Packed24(values.bfloat16().contiguous(), packed.meta, n, k)
        try:
            entry["bf16_rel_err"] = rel_err(run(xb, pb, b), F.linear(xb, w.bfloat16(), b.bfloat16()))
            entry["bf16_ok"] = entry["bf16_rel_err"] < TOL
        except Exception as exc:
            entry.update(bf16_ok=False, bf16_error=f"{type(exc).__name__}: {str(exc)[:300]}")
    vals16 = values.half()
    try:
        entry["triton_rel_err"] = rel_err(nm.nm24_linear(x, vals16, positions, b), ref)
    except Exception as exc:
        entry["triton_error"] = f"{type(exc).__name__}: {str(exc)[:300]}"
    entry["dense_ms"] = median_ms(lambda: F.linear(x, wh, b.half()), torch, reps, DEV)
    if "triton_rel_err" in entry:
        entry["triton_ms"] = median_ms(lambda: nm.nm24_linear(x, vals16, positions, b), torch, reps, DEV)
    for cfg, row in entry["configs"].items():
        if row["ok"]:
            row["ms"] = median_ms(lambda: run(x, packed, b, int(cfg)), torch, reps, DEV)
    timed = {c: r["ms"] for c, r in entry["configs"].items() if "ms" in r}
    if timed:
        best = min(timed, key=timed.get)
        entry.update(best_config=int(best), default_config=sm.default_config(m), ms=timed[best],
                     speedup=entry["dense_ms"] / timed[best])
        if "triton_ms" in entry:
            entry["vs_triton"] = entry["triton_ms"] / timed[best]
            entry["triton_speedup"] = entry["dense_ms"] / entry["triton_ms"]
    return entry


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--out", default=str(ROOT / "results" / "benchmarks"))
    ap.add_argument("--smoke", action="store_true", help="every path but the CUDA kernel, on tiny CPU shapes (needs "
                    "TRITON_INTERPRET=1 in the environment); timings are meaningless")
    args = ap.parse_args(argv)
    import torch
    import torch.nn.functional as F

    global DEV
    name, code = start("nm_sparse_mma", args.smoke, torch)
    if name is None:
        return code
    DEV = "cpu" if args.smoke else "cuda"
    from slimbench.methods.prune.kernels import nm
    from slimbench.methods.prune.kernels import nm_sparse_mma as sm

    result = {"device": name, "torch": torch.__version__, "reps": args.reps, "source": sm.source_hash(),
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "capability": None if args.smoke else list(torch.cuda.get_device_capability()),
              "shapes": [], "measured_faster": [], "complete": False}
    out = record_path(args.out, "nm-sparse-mma", name)

    def save():
        out.write_text(json.dumps(result, indent=1))
    if not args.smoke:
        t0 = time.perf_counter()
        try:
            sm.build()
        except Exception as exc:
            result["build_error"] = f"{type(exc).__name__}: {str(exc)[-3000:]}"
            save()
            print(f"build failed: {result['build_error']}")
            return 1
        result["build_s"] = round(time.perf_counter() - t0, 1)
        print(f"built in {result['build_s']} s", flush=True)
    torch.manual_seed(0)
    bad = []
    for m, k, n in SMOKE_SHAPES if args.smoke else SHAPES:
        entry = shape_entry(torch, F, sm, nm, m, k, n, args.reps, args.smoke)
        result["shapes"].append(entry)
        bad += [f"{entry['shape']} config {c}" for c, r in entry["configs"].items() if not r["ok"]]
        bad += [f"{entry['shape']} bf16"] if entry.get("bf16_ok") is False else []
        if entry.get("vs_triton", 0) > 1 and not args.smoke:
            result["measured_faster"].append([n, k, m])
        print(json.dumps(entry), flush=True)
        save()
    result["complete"] = True
    save()
    print(f"wrote {out}" + (f"; FAILED: {', '.join(bad)}" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
