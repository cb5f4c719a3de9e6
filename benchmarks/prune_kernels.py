"""Correctness, then speed, of the pruning family's kernels and pruned models on a GPU.

    python benchmarks/prune_kernels.py [--reps 50] [--out results/benchmarks]
    TRITON_INTERPRET=1 python benchmarks/prune_kernels.py --smoke --out /tmp/x   # no GPU: the code paths

1. Correctness: the 2:4 kernel (`nm24_linear`) and the block-sparse kernel (`bsr_linear`) against
   torch on the timed shapes (a failure is recorded and makes the script exit 1; a failing kernel
   is never timed).
2. Kernels against fp16 `F.linear` (CUDA-event medians, L2 flushed before each call): 2:4 at
   8192^3 (target >= 1.4x), 4096x768x3072 (target >= 1.1x) and decode sizes; the stock
   semi-structured 2:4 (`to_sparse_semi_structured`) beside it where this torch has it; block
   sparse (32 and 64 blocks) at 75% block sparsity, 4096^3 (target >= 2.5x).
3. Models (random weights, fp16, CUDA-graph replay): timm ResNet-50 with 50% of the channels
   removed by `prune.structured`'s Torch-Pruning path, batch 64 (target >= 1.7x); a BERT-base-shaped
   encoder with its FFN layers 2:4 (`NMLinear`), batch 32, sequence 128 (target >= 1.1x).
Writes results/benchmarks/prune-kernels-<device>.json after each part. Works without
`pip install` of slimbench (it maps the repo).
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_common import capture_graph, median_ms, record_path, rel_err, start  # noqa: E402

DEV = "cuda"
NM_SHAPES = [(8192, 8192, 8192), (4096, 768, 3072), (4096, 3072, 768), (1, 4096, 11008), (16, 4096, 11008)]
BSR_SHAPES = [(4096, 4096, 4096, 32), (4096, 4096, 4096, 64)]
SMOKE_NM, SMOKE_BSR = [(8, 64, 32)], [(8, 64, 64, 16)]


def two_of_four(torch, n: int, k: int):
    from slimbench.methods.prune.masks import nm_keep
    w = torch.randn(n, k, device=DEV) / k ** 0.5
    return w * nm_keep(w, 2, 4)


def block_sparse(torch, n: int, k: int, b: int, density: float):
    w = torch.randn(n, k, device=DEV) / k ** 0.5
    keep = torch.rand(n // b, k // b, device=DEV) < density
    return w * keep.repeat_interleave(b, 0).repeat_interleave(b, 1)


def kernels(torch, F, reps: int, smoke: bool, result: dict, save) -> None:
    from slimbench.methods.common import storage
    from slimbench.methods.prune.kernels import blocksparse, nm

    dtype = torch.float16
    for m, k, n in SMOKE_NM if smoke else NM_SHAPES:
        shape, entry = f"{m}x{k}x{n}", {"kernel": "2:4 nm24_linear", "shape": f"{m}x{k}x{n}"}
        w = two_of_four(torch, n, k)
        values, positions = storage.to_nm(w, 2, 4)
        values = values.to(dtype)
        x = torch.randn(m, k, device=DEV, dtype=dtype)
        wh = w.to(dtype)
        ref = F.linear(x, wh)
        try:
            out = nm.nm24_linear(x, values, positions)
            entry["rel_err"] = rel_err(out, ref)
            entry["ok"] = entry["rel_err"] < 2e-2
        except Exception as exc:  # recorded, never timed
            entry.update(ok=False, error=f"{type(exc).__name__}: {exc}")
        entry["fp16_ms"] = median_ms(lambda: F.linear(x, wh), torch, reps, DEV)
        if entry["ok"]:
            entry["ms"] = median_ms(lambda: nm.nm24_linear(x, values, positions), torch, reps, DEV)
            entry["speedup"] = entry["fp16_ms"] / entry["ms"]
        try:  # the stock anchor: torch's semi-structured 2:4 (cuSPARSELt / CUTLASS), where it runs
            from torch.sparse import to_sparse_semi_structured
            ws = to_sparse_semi_structured(wh)
            entry["stock_ms"] = median_ms(lambda: F.linear(x, ws), torch, reps, DEV)
            entry["stock_speedup"] = entry["fp16_ms"] / entry["stock_ms"]
        except Exception as exc:
            entry["stock_error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
        result["kernels"].append(entry)
        print(f"{shape} 2:4: {entry}", flush=True)
        save()
    for m, k, n, b in SMOKE_BSR if smoke else BSR_SHAPES:
        entry = {"kernel": f"block-sparse {b}x{b} 75%", "shape": f"{m}x{k}x{n}"}
        w = block_sparse(torch, n, k, b, 0.25).to(dtype)
        bsr = w.float().to_sparse_bsr((b, b))
        vals = bsr.values().to(dtype)
        crow, col = bsr.crow_indices().to(torch.int32), bsr.col_indices().to(torch.int32)
        x = torch.randn(m, k, device=DEV, dtype=dtype)
        ref = F.linear(x, w)
        try:
            out = blocksparse.bsr_linear(x, vals, crow, col)
            entry["rel_err"] = rel_err(out, ref)
            entry["ok"] = entry["rel_err"] < 2e-2
        except Exception as exc:
            entry.update(ok=False, error=f"{type(exc).__name__}: {exc}")
        entry["fp16_ms"] = median_ms(lambda: F.linear(x, w), torch, reps, DEV)
        if entry["ok"]:
            entry["ms"] = median_ms(lambda: blocksparse.bsr_linear(x, vals, crow, col), torch, reps, DEV)
            entry["speedup"] = entry["fp16_ms"] / entry["ms"]
        result["kernels"].append(entry)
        print(f"{entry['shape']} {entry['kernel']}: {entry}", flush=True)
        save()


def graph_ms(torch, model, inputs: dict, reps: int) -> float:
    """Median ms of a CUDA-graph replay of one forward (wall time of one eager call under --smoke)."""
    if DEV == "cpu":
        with torch.inference_mode():
            return median_ms(lambda: model(**inputs), torch, reps, DEV)
    return median_ms(capture_graph(model, inputs, torch)[0], torch, reps, DEV)


def models(torch, reps: int, smoke: bool, result: dict, save) -> None:
    import copy
    import types

    from slimbench.methods.prune.structured import prune_cnn

    dtype = torch.float32 if smoke else torch.float16
    # (a) ResNet-50 (random weights), half of every prunable channel group removed
    import timm

    from slimbench.tasks.vision import TimmClassifier
    name, bs, size = ("resnet18", 2, 64) if smoke else ("resnet50", 64, 224)
    dense = TimmClassifier(timm.create_model(name, num_classes=1000)).eval()
    x = {"pixel_values": torch.randn(bs, 3, size, size)}
    ctx = types.SimpleNamespace(device=torch.device("cpu"), example_inputs=lambda n: {k: v[:n] for k, v in x.items()})
    pruned = copy.deepcopy(dense)
    info = prune_cnn(pruned, 0.5, "l1", ("fc", "*.fc"), ctx, 1)
    entry = {"model": f"{name} 50% channels removed", "batch": bs, **info,
             "params_dense": sum(p.numel() for p in dense.parameters()),
             "params_pruned": sum(p.numel() for p in pruned.parameters())}
    xs = {k: v.to(DEV, dtype) for k, v in x.items()}
    entry["dense_ms"] = graph_ms(torch, dense.to(DEV, dtype), xs, reps)
    entry["pruned_ms"] = graph_ms(torch, pruned.to(DEV, dtype), xs, reps)
    entry["speedup"] = entry["dense_ms"] / entry["pruned_ms"]
    result["models"].append(entry)
    print(entry, flush=True)
    save()
    # (b) BERT-base-shaped encoder, FFN layers 2:4
    from transformers import BertConfig, BertModel

    from slimbench.methods.common.layers import replace_module
    from slimbench.methods.prune.masks import apply, nm_masks
    from slimbench.methods.prune.sparse import nm_twin
    cfg = BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128) if smoke \
        else BertConfig()
    bs, seq = (2, 16) if smoke else (32, 128)
    dense = BertModel(cfg).eval()
    sparse = copy.deepcopy(dense)
    ffn = {n: m for n, m in sparse.named_modules() if n.endswith(("intermediate.dense", "output.dense"))
           and ".attention." not in n}
    apply(ffn, nm_masks(ffn, 2, 4, "prune_kernels"))
    for name, lin in ffn.items():
        replace_module(sparse, name, nm_twin(lin, 2, 4))
    ids = {"input_ids": torch.randint(0, cfg.vocab_size, (bs, seq), device=DEV)}
    entry = {"model": "bert-base-shaped, FFN 2:4", "batch": bs, "seq": seq}
    entry["dense_ms"] = graph_ms(torch, dense.to(DEV, dtype), ids, reps)
    entry["sparse_ms"] = graph_ms(torch, sparse.to(DEV, dtype), ids, reps)
    entry["speedup"] = entry["dense_ms"] / entry["sparse_ms"]
    result["models"].append(entry)
    print(entry, flush=True)
    save()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--out", default=str(ROOT / "results" / "benchmarks"))
    ap.add_argument("--smoke", action="store_true", help="every path on tiny shapes on the CPU through the Triton "
                    "interpreter (needs TRITON_INTERPRET=1 in the environment); timings are meaningless")
    args = ap.parse_args(argv)
    import torch
    import torch.nn.functional as F

    global DEV
    name, code = start("prune_kernels", args.smoke, torch)
    if name is None:
        return code
    DEV = "cpu" if args.smoke else "cuda"
    import triton

    result = {"device": name, "torch": torch.__version__, "triton": triton.__version__, "reps": args.reps,
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "kernels": [], "models": [], "complete": False}
    out = record_path(args.out, "prune-kernels", name)

    def save():
        out.write_text(json.dumps(result, indent=1))
    torch.manual_seed(0)
    kernels(torch, F, args.reps, args.smoke, result, save)
    models(torch, args.reps, args.smoke, result, save)
    result["complete"] = True
    save()
    bad = [e["kernel"] + " " + e["shape"] for e in result["kernels"] if not e.get("ok")]
    print(f"wrote {out}" + (f"; FAILED: {', '.join(bad)}" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
