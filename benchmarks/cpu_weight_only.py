"""Why the 4-bit and 8-bit weight-only rows are slow on the CPU: each candidate kernel at MiniLM's Linear shapes.

    python benchmarks/cpu_weight_only.py [--threads N] [--quick] [--out results/benchmarks]

At the rotten-tomatoes model's Linear shapes (N x K = 384x384, 1536x384, 384x1536) and its token
counts (M = 48: batch 1 x 48 tokens; M = 1536: batch 32), times one layer's forward through:
the dense fp32 `F.linear` (the baseline's kernel), slimbench's 4-bit group-128 layer as it runs
today (`QuantLinear`: unpack + dequantize + dense, every call), PyTorch's CPU weight-only kernels
(`_weight_int4pack_mm_for_cpu` with fp32 and bf16 activations, `_weight_int8pack_mm`), the W8A8
layer (per-token int8 activations + `torch._int_mm`) and fbgemm's `quantized::linear_dynamic`.
Each candidate is first checked against a float reference of what it computes. Writes
results/benchmarks/cpu-weight-only-vm-<isa>.json. Run it on a quiet machine: these are timings.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHAPES = ((384, 384), (1536, 384), (384, 1536))  # (N out, K in) of MiniLM-L6's Linears
TOKENS = (48, 1536)
GROUP = 128


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: all usable)")
    ap.add_argument("--quick", action="store_true", help="short timings (a smoke run, not a record)")
    ap.add_argument("--out", default=str(ROOT / "results" / "benchmarks"))
    args = ap.parse_args(argv)
    import torch
    import torch.nn.functional as F

    from slimbench.methods.quant import w8a8
    from slimbench.methods.quant.linear import QuantLinear
    from slimbench.methods.quant.torch_int8 import prepack_int8
    from slimbench.suite.measure.latency import LatencyConfig, measure_latency
    from slimbench.suite.provenance import capability, device_name

    threads = args.threads or len(os.sched_getaffinity(0))
    cfg = LatencyConfig(warmup=2 if args.quick else 5, min_runs=3 if args.quick else 20,
                        min_seconds=0.05 if args.quick else 0.5, max_seconds=2.0 if args.quick else 10.0,
                        threads=threads)
    torch.manual_seed(0)
    rows = []
    for n, k in SHAPES:
        lin = torch.nn.Linear(k, n)
        q4 = QuantLinear.from_linear(lin, 4, "group", GROUP, True).eval()
        w4 = q4.dequantize()  # what the 4-bit layer computes with
        codes = q4.codes().to(torch.int32)  # unsigned 0..15, zero point 8 (symmetric)
        packed4 = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1)
        scale = q4.scale.float().t().contiguous()  # [groups, n]
        sz = torch.stack([scale, torch.zeros_like(scale)], -1).contiguous()  # the kernel: w = (q - 8) * s + z
        q8 = w8a8.W8A8Linear.from_linear(lin, None).eval()
        w8 = q8.weight
        s8 = q8.weight_scale
        packed_dyn = prepack_int8(w8, s8, torch.zeros(n, dtype=torch.long), lin.bias.detach())
        for m in TOKENS:
            x = torch.randn(m, k)
            ref4 = F.linear(x, w4, lin.bias)
            ref8 = F.linear(x, w8.float() * s8[:, None], lin.bias)
            cands = {
                "dense fp32 F.linear": (lambda: F.linear(x, lin.weight, lin.bias), F.linear(x, lin.weight, lin.bias)),
                "4-bit QuantLinear (unpack + dequantize + dense)": (lambda: q4(x), ref4),
                "4-bit dequantize alone (its share of the above)": (q4.dequantize, w4),
                "4-bit _weight_int4pack_mm_for_cpu, fp32 x": (
                    lambda: torch.ops.aten._weight_int4pack_mm_for_cpu(x, packed4, GROUP, sz) + lin.bias, ref4),
                "4-bit _weight_int4pack_mm_for_cpu, bf16 x": (
                    lambda: torch.ops.aten._weight_int4pack_mm_for_cpu(
                        x.bfloat16(), packed4, GROUP, sz.bfloat16()).float() + lin.bias, ref4),
                "8-bit _weight_int8pack_mm (per channel), fp32 x": (
                    lambda: torch.ops.aten._weight_int8pack_mm(x, w8, s8) + lin.bias, ref8),
                "W8A8Linear (per-token int8 x, torch._int_mm)": (lambda: q8(x), ref8),
                "fbgemm quantized::linear_dynamic (per-tensor uint8 x)": (
                    lambda: torch.ops.quantized.linear_dynamic(x, packed_dyn), ref8),
            }
            for name, (fn, ref) in cands.items():
                with torch.inference_mode():
                    out = fn().float()
                    err = float((out - ref).abs().max() / ref.abs().max().clamp(min=1e-12))
                    stats = measure_latency(fn, "cpu", cfg)
                rows.append({"n": n, "k": k, "m": m, "kernel": name, "median_ms": round(stats.median_ms, 4),
                             "p90_ms": round(stats.p90_ms, 4), "runs": stats.runs, "rel_max_err": round(err, 5)})
                print(f"{n}x{k} M={m:5d} {name:55s} {stats.median_ms:9.3f} ms  rel.err {err:.1e}", flush=True)
    dense = {(r["n"], r["k"], r["m"]): r["median_ms"] for r in rows if r["kernel"].startswith("dense")}
    for r in rows:
        r["x_of_dense"] = round(dense[(r["n"], r["k"], r["m"])] / r["median_ms"], 3)
    cap = capability("cpu")
    isa = "-".join(f for f in ("avx512_vnni", "amx_int8", "avx512_bf16") if f in cap["flags"]) or cap["isa"]
    out = {"benchmark": "cpu_weight_only", "date": datetime.date.today().isoformat(), "quick": args.quick,
           "device": device_name("cpu"), "capability": cap, "threads": threads, "torch": torch.__version__,
           "python": platform.python_version(), "int_mm_exact": w8a8.cpu_int_mm_exact(),
           "protocol": cfg.__dict__, "rows": rows}
    path = Path(args.out) / f"cpu-weight-only-vm-{isa.replace('_', '-').lower()}{'-quick' if args.quick else ''}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
