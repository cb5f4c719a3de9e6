"""Correctness, then speed, of the fused low-rank kernel and a low-rank BERT on a GPU.

    python benchmarks/lowrank_kernels.py [--reps 50] [--quick] [--out results/benchmarks]
    TRITON_INTERPRET=1 python benchmarks/lowrank_kernels.py --smoke --out /tmp/x   # no GPU: the code paths

1. Correctness: `lowrank_linear` against torch's two matmuls on every timed shape and config (a
   failure is recorded, never timed, and makes the script exit 1).
2. Kernels, fp16, CUDA-event medians with L2 flushed: y = (x V^T) U^T + b at M=4096, K=N=4096 with
   r=1024 (half the dense FLOPs; targets >= 1.8x over dense F.linear and >= 1.15x over the two-call
   torch path) and r=256 (target >= 3x over dense); decode shapes M=1 and 16 beside them. The
   default tile config and, unless --quick, a sweep of tile configs on the target shapes (the best recorded).
3. Model: a BERT-base-shaped encoder (random weights, fp16) with every FFN Linear at rank 25% of
   its full rank (192), batch 32, sequence 128, CUDA-graph replay: dense vs the factors as two
   matmuls vs the fused kernel (target >= 1.3x over dense).
Writes results/benchmarks/lowrank-kernels-<device>.json after each part. Works without
`pip install` of slimbench (it maps the repo).
"""
from __future__ import annotations

import argparse
import datetime
import itertools
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_common import capture_graph, median_ms, record_path, rel_err, start  # noqa: E402

DEV = "cuda"
SHAPES = [(4096, 4096, 4096, 1024), (4096, 4096, 4096, 256), (1, 4096, 4096, 1024), (16, 4096, 4096, 1024),
          (4096, 768, 3072, 192), (4096, 3072, 768, 192)]
SMOKE_SHAPES = [(8, 64, 48, 16), (3, 64, 32, 40)]
TARGETS = {(4096, 4096, 4096, 1024): {"vs_dense": 1.8, "vs_two_calls": 1.15}, (4096, 4096, 4096, 256): {"vs_dense": 3.0}}
# swept on the target shapes only (each config is a compile): 32 configs
SWEEP = {"block_m": (64, 128), "block_r": (64, 128), "block_n": (64, 128), "split_n": (1, 4), "num_warps": (4, 8)}


def _operands(torch, m, k, n, r, dtype):
    x = torch.randn(m, k, device=DEV, dtype=dtype)
    v = (torch.randn(r, k, device=DEV) / k ** 0.5).to(dtype)
    u = (torch.randn(n, r, device=DEV) / r ** 0.5).to(dtype)
    b = torch.randn(n, device=DEV, dtype=dtype)
    return x, v, u, b


def kernels(torch, F, reps: int, smoke: bool, quick: bool, result: dict, save) -> None:
    from slimbench.methods.lowrank.kernels.fused import lowrank_linear

    dtype = torch.float16
    for m, k, n, r in SMOKE_SHAPES if smoke else SHAPES:
        entry = {"shape": f"M={m} K={k} N={n} r={r}", "targets": {k_: v for k_, v in
                                                              TARGETS.get((m, k, n, r), {}).items()}}
        x, v, u, b = _operands(torch, m, k, n, r, dtype)
        w = (u.float() @ v.float()).to(dtype)  # the dense layer the factors replace
        ref = F.linear(F.linear(x, v), u, b)
        entry["dense_ms"] = median_ms(lambda: F.linear(x, w, b), torch, reps, DEV)
        entry["two_calls_ms"] = median_ms(lambda: F.linear(F.linear(x, v), u, b), torch, reps, DEV)
        configs = [{}]
        if not quick and not smoke and (m, k, n, r) in TARGETS:
            configs += [dict(zip(SWEEP, c)) for c in itertools.product(*SWEEP.values())]
        elif smoke:
            configs += [{"block_m": 16, "block_r": 16, "split_n": 2}]
        entry["configs"] = []
        for cfg in configs:
            run = {"config": cfg or "default"}
            try:
                out = lowrank_linear(x, v, u, b, **cfg)
                run["rel_err"] = rel_err(out, ref)
                run["ok"] = run["rel_err"] < 2e-2
            except Exception as exc:  # recorded, never timed
                run.update(ok=False, error=f"{type(exc).__name__}: {str(exc)[:200]}")
            if run["ok"]:
                run["ms"] = median_ms(lambda: lowrank_linear(x, v, u, b, **cfg), torch, reps, DEV)
            entry["configs"].append(run)
        timed = [c for c in entry["configs"] if "ms" in c]
        entry["ok"] = all(c["ok"] for c in entry["configs"] if "error" not in c) and bool(timed)
        if timed:
            default = entry["configs"][0].get("ms")
            best = min(timed, key=lambda c: c["ms"])
            entry.update(fused_ms=default, best_ms=best["ms"], best_config=best["config"],
                         vs_dense=entry["dense_ms"] / best["ms"], vs_two_calls=entry["two_calls_ms"] / best["ms"],
                         two_calls_vs_dense=entry["dense_ms"] / entry["two_calls_ms"])
        result["kernels"].append(entry)
        print({k_: v_ for k_, v_ in entry.items() if k_ != "configs"}, flush=True)
        save()


def graph_ms(torch, model, inputs: dict, reps: int) -> float:
    if DEV == "cpu":
        with torch.inference_mode():
            return median_ms(lambda: model(**inputs), torch, reps, DEV)
    return median_ms(capture_graph(model, inputs, torch)[0], torch, reps, DEV)


def model(torch, reps: int, smoke: bool, result: dict, save) -> None:
    import copy

    from transformers import BertConfig, BertModel

    from slimbench.methods.common.layers import replace_module
    from slimbench.methods.lowrank.factor import weighted_svd
    from slimbench.methods.lowrank.modules import LowRankLinear

    dtype = torch.float16  # the fused kernel takes fp16/bf16 (on the CPU too, through the interpreter)
    cfg = BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128) if smoke \
        else BertConfig()
    bs, seq = (2, 16) if smoke else (32, 128)
    dense = BertModel(cfg).eval()
    rank = cfg.hidden_size // 4
    factored = {}
    for kernel in ("torch", "fused"):
        m = copy.deepcopy(dense)
        for name, lin in list(m.named_modules()):
            if name.endswith(("intermediate.dense", "output.dense")) and ".attention." not in name:
                a, b = weighted_svd(lin.weight).factors(rank)
                replace_module(m, name, LowRankLinear.from_factors(a.float(), b.float(), lin.bias, kernel))
        factored[kernel] = m
    ids = {"input_ids": torch.randint(0, cfg.vocab_size, (bs, seq), device=DEV)}
    entry = {"model": "bert-base-shaped, FFN at rank 25%", "rank": rank, "batch": bs, "seq": seq, "target": 1.3,
             "params_dense": sum(p.numel() for p in dense.parameters()),
             "params_lowrank": sum(p.numel() for p in factored["torch"].parameters())}
    entry["dense_ms"] = graph_ms(torch, dense.to(DEV, dtype), ids, reps)
    with torch.inference_mode():
        ref = factored["torch"].to(DEV, dtype)(**ids).last_hidden_state
        out = factored["fused"].to(DEV, dtype)(**ids).last_hidden_state
    entry["fused_vs_torch_rel_err"] = rel_err(out, ref)
    for kernel, m in factored.items():
        entry[f"{kernel}_ms"] = graph_ms(torch, m, ids, reps)
        entry[f"{kernel}_speedup"] = entry["dense_ms"] / entry[f"{kernel}_ms"]
    result["models"].append(entry)
    print(entry, flush=True)
    save()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--quick", action="store_true", help="the default tile config only (no sweep)")
    ap.add_argument("--out", default=str(ROOT / "results" / "benchmarks"))
    ap.add_argument("--smoke", action="store_true", help="every path on tiny shapes on the CPU through the Triton "
                    "interpreter (needs TRITON_INTERPRET=1 in the environment); timings are meaningless")
    args = ap.parse_args(argv)
    import torch
    import torch.nn.functional as F

    global DEV
    name, code = start("lowrank_kernels", args.smoke, torch)
    if name is None:
        return code
    DEV = "cpu" if args.smoke else "cuda"
    import triton

    result = {"device": name, "torch": torch.__version__, "triton": triton.__version__, "reps": args.reps,
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "kernels": [], "models": [], "complete": False}
    out = record_path(args.out, "lowrank-kernels", name)

    def save():
        out.write_text(json.dumps(result, indent=1))
    torch.manual_seed(0)
    kernels(torch, F, args.reps, args.smoke, args.quick, result, save)
    model(torch, args.reps, args.smoke, result, save)
    result["complete"] = True
    save()
    bad = [e["shape"] for e in result["kernels"] if not e.get("ok")]
    print(f"wrote {out}" + (f"; FAILED: {', '.join(bad)}" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
