"""End-to-end speed of slimbench's `quant.w8a8` on a BERT-base-shaped model against fp16, on a GPU.

    python benchmarks/e2e_bert_w8a8.py [--reps 100] [--warmup 20] [--no-cuda-graph] [--out DIR]
    python benchmarks/e2e_bert_w8a8.py --dry-run      # tiny model on CPU; writes nothing

Kernel benchmarks (benchmarks/quant_kernels.py) show each GEMM alone; this shows whether the
speedup survives in a whole model, where attention, LayerNorm, GELU and the extra per-token
activation-quantization kernels are not sped up. A randomly initialised
BertForSequenceClassification (12 layers, hidden 768, 12 heads, FFN 3072; no download) runs at
batch 32 x sequence 128 in fp16; a deep copy is compressed through the suite's own front door
(`create_method(spec).compress`), so the numbers are for the layers the suite really ships.
Both are timed with CUDA events (warm-up, then the median of --reps), eagerly and, unless
--no-cuda-graph, as CUDA-graph replays (no launch gaps); fp16 is timed twice so its spread
shows the noise. Outputs are compared by SNR (dB) of the last hidden state and the logits.
Writes results/benchmarks/e2e-bert-w8a8-<gpu-name>.json (device, versions, medians, speedup,
target 1.3x). Exits 1 if the W8A8 output disagrees (SNR under --min-snr-db). Works without
`pip install` of slimbench (it maps the repo's folders into the `slimbench` namespace).
"""
from __future__ import annotations

import argparse
import atexit
import copy
import datetime
import json
import math
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_SPEEDUP = 1.3
FULL = dict(layers=12, hidden=768, heads=12, intermediate=3072, batch=32, seq=128)
TINY = dict(layers=2, hidden=64, heads=2, intermediate=128, batch=2, seq=16)


def import_slimbench() -> str:
    """Make `slimbench.*` importable where it is not installed (the GPU machine); returns how.

    setup.py maps core/, suite/, methods/, tasks/, leaderboard/ into the `slimbench` namespace, so a
    temporary `slimbench/` folder of symlinks to them, put first on sys.path, is the same
    package without pip. If symlinks cannot be made, a namespace module whose __path__ is the
    repo root does the same job."""
    try:
        import slimbench.methods  # noqa: F401
        return "installed"
    except ImportError:
        pass
    for name in [m for m in sys.modules if m == "slimbench" or m.startswith("slimbench.")]:
        del sys.modules[name]  # a failed partial import must not shadow the shim
    try:
        shim = Path(tempfile.mkdtemp(prefix="slimbench-shim-")) / "slimbench"
        atexit.register(shutil.rmtree, shim.parent, True)  # symlinks only: the repo is untouched
        shim.mkdir()
        for root in ("core", "suite", "methods", "tasks", "leaderboard"):
            if (ROOT / root).is_dir():
                (shim / root).symlink_to(ROOT / root, target_is_directory=True)
        sys.path.insert(0, str(shim.parent))
        import slimbench.methods  # noqa: F401,F811
        return f"symlink shim {shim}"
    except (OSError, ImportError):
        import types
        sys.modules.pop("slimbench", None)
        pkg = types.ModuleType("slimbench")
        pkg.__path__ = [str(ROOT)]
        sys.modules["slimbench"] = pkg
        import slimbench.methods  # noqa: F401,F811
        return "namespace-module shim"


def snr_db(out, ref) -> float:
    """10 log10(|ref|^2 / |out - ref|^2) in float64; inf if identical, nan if out has NaN/inf."""
    import torch
    out, ref = out.detach().double().cpu(), ref.detach().double().cpu()
    if not torch.isfinite(out).all():
        return float("nan")
    noise = float((out - ref).pow(2).sum())
    return float("inf") if noise == 0 else 10 * math.log10(float(ref.pow(2).sum()) / noise)


def build_model(shape: dict, device, dtype):
    """A randomly initialised BertForSequenceClassification of `shape` (no weights downloaded)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=30522, hidden_size=shape["hidden"], num_hidden_layers=shape["layers"],
                        num_attention_heads=shape["heads"], intermediate_size=shape["intermediate"],
                        max_position_embeddings=512, num_labels=2)
    torch.manual_seed(0)
    with torch.device(device):
        model = BertForSequenceClassification(config)
    return model.to(dtype).eval()


def compress(model, spec: str, device, calib=()):
    """Quantize through the suite's front door; dynamic W8A8 reads nothing from the context,
    static W8A8 calibrates on `calib` (batches of random token ids).

    The suite wraps a CUDA model to compute in fp16 (`compute=auto`); this model is fp16
    already and returns a HF output object, so the quantized model inside is used as is."""
    from slimbench.methods import create_method
    from slimbench.methods.common.cast import unwrap
    from slimbench.suite.context import make_context

    method = create_method(spec)
    ctx = make_context(device=device, calibration=list(calib), owner=spec)
    return unwrap(method.compress(model, ctx).model)[0]


def time_ms(fn, torch, reps: int, warmup: int, cuda: bool = True) -> dict:
    """Median and p90 of `fn` in ms through the suite's own latency protocol (CUDA events on a GPU,
    perf_counter on the CPU), exactly `reps` timed calls after `warmup`."""
    from slimbench.suite.measure.latency import LatencyConfig, measure_latency

    cfg = LatencyConfig(warmup=warmup, min_runs=reps, min_seconds=0.0, max_seconds=1e9)
    stats = measure_latency(fn, "cuda" if cuda else "cpu", cfg)
    return {"median_ms": stats.median_ms, "p90_ms": stats.p90_ms, "mean_ms": stats.mean_ms, "reps": stats.runs}


def graph_runner(model, ids, torch):
    """Capture one forward as a CUDA graph; returns (replay fn, static logits)."""
    from gpu_common import capture_graph  # this script's folder is on sys.path when run
    replay, out = capture_graph(model, {"input_ids": ids}, torch)
    return replay, out.logits


def versions(torch) -> dict:
    import transformers
    v = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
         "transformers": transformers.__version__}
    try:
        import triton
        v["triton"] = triton.__version__
    except ImportError:
        v["triton"] = None
    try:
        v["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                                         text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        v["git_commit"] = None
    return v


def run(args) -> tuple[dict, int]:
    import torch

    how = import_slimbench()
    dry = args.dry_run
    if not dry and not torch.cuda.is_available():
        print("e2e_bert_w8a8: no CUDA device here; run this on the GPU machine (or use --dry-run). "
              "Nothing was measured.")
        return {}, 0
    device = torch.device("cpu" if dry else "cuda")
    dtype = torch.float32 if dry else torch.float16  # fp16 matmul on CPU is slow and not the point
    shape = dict(TINY if dry else FULL)
    if args.batch:
        shape["batch"] = args.batch
    if args.seq:
        shape["seq"] = args.seq
    reps, warmup = (3, 1) if dry else (args.reps, args.warmup)
    print(f"slimbench import: {how}; device {device}, {dtype}, shape {shape}", flush=True)

    base = build_model(shape, device, dtype)
    quant = compress(copy.deepcopy(base), args.spec, device)
    from slimbench.methods.quant.w8a8 import W8A8Base
    qnames = [n for n, m in quant.named_modules() if isinstance(m, W8A8Base)]
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, base.config.vocab_size, (shape["batch"], shape["seq"]), generator=gen).to(device)

    with torch.no_grad():
        ref = base(input_ids=ids, output_hidden_states=True)
        got = quant(input_ids=ids, output_hidden_states=True)
        accuracy = {"snr_db_last_hidden": snr_db(got.hidden_states[-1], ref.hidden_states[-1]),
                    "snr_db_logits": snr_db(got.logits, ref.logits)}
        if not dry:  # what fp16 itself loses, as a yardstick for the W8A8 number
            ref32 = copy.deepcopy(base).float()(input_ids=ids, output_hidden_states=True)
            accuracy["snr_db_fp16_vs_fp32_last_hidden"] = snr_db(ref.hidden_states[-1], ref32.hidden_states[-1])
            del ref32
        snr = accuracy["snr_db_last_hidden"]
        ok = not math.isnan(snr) and snr >= args.min_snr_db
        print(f"snr_db: {snr:.2f} (last hidden state; logits {accuracy['snr_db_logits']:.2f}; "
              f"{len(qnames)} Linear layers quantized; {'ok' if ok else 'BELOW'} min {args.min_snr_db})", flush=True)

        modes = {}
        fp16 = lambda: base(input_ids=ids)  # noqa: E731
        w8a8 = lambda: quant(input_ids=ids)  # noqa: E731
        a = time_ms(fp16, torch, reps, warmup, not dry)
        b = time_ms(w8a8, torch, reps, warmup, not dry)
        a2 = time_ms(fp16, torch, reps, warmup, not dry)
        modes["eager"] = {"fp16": a, "w8a8": b, "fp16_repeat": a2,
                          "speedup": a["median_ms"] / b["median_ms"],
                          "noise_pct": 100 * abs(a2["median_ms"] - a["median_ms"]) / a["median_ms"]}
        if not dry and not args.no_cuda_graph:
            try:
                fp16_g, fp16_out = graph_runner(base, ids, torch)
                w8a8_g, w8a8_out = graph_runner(quant, ids, torch)
                a, b = time_ms(fp16_g, torch, reps, warmup), time_ms(w8a8_g, torch, reps, warmup)
                a2 = time_ms(fp16_g, torch, reps, warmup)
                modes["cuda_graph"] = {"fp16": a, "w8a8": b, "fp16_repeat": a2,
                                       "speedup": a["median_ms"] / b["median_ms"],
                                       "noise_pct": 100 * abs(a2["median_ms"] - a["median_ms"]) / a["median_ms"],
                                       "replay_vs_eager_snr_db": {"fp16": snr_db(fp16_out, ref.logits),
                                                                  "w8a8": snr_db(w8a8_out, got.logits)}}
            except Exception as exc:  # a host sync inside the forward breaks capture: keep eager numbers
                modes["cuda_graph"] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    for mode, m in modes.items():
        if "error" in m:
            print(f"  {mode:10s} failed: {m['error']}", flush=True)
        else:
            print(f"  {mode:10s} {'fp32' if dry else 'fp16'} {m['fp16']['median_ms']:8.3f} ms  "
                  f"w8a8 {m['w8a8']['median_ms']:8.3f} ms  "
                  f"speedup {m['speedup']:.3f}x  (fp16 rerun differs {m['noise_pct']:.1f}%)", flush=True)

    variants = {spec: variant(spec, base, ids, ref, modes, shape, device, args, torch) for spec in args.extra_spec}

    headline = modes["eager"]["speedup"]
    result = {
        "benchmark": "e2e-bert-w8a8", "dry_run": dry,
        "device": "cpu" if dry else torch.cuda.get_device_name(),
        "capability": None if dry else list(torch.cuda.get_device_capability()),
        "versions": versions(torch), "slimbench_import": how.split(" ")[0],
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": {"arch": "BertForSequenceClassification (random init)", **shape, "dtype": str(dtype),
                  "attn_implementation": getattr(base.config, "_attn_implementation", None)},
        "method_spec": args.spec, "quantized_layers": len(qnames),
        "timing": {"warmup": warmup, "reps": reps, "timer": "perf_counter" if dry else "cuda events"},
        "accuracy": accuracy, "min_snr_db": args.min_snr_db, "outputs_agree": ok,
        "modes": modes, "speedup": headline, "speedup_mode": "eager", "variants": variants,
        "target_speedup": TARGET_SPEEDUP, "meets_target": bool(headline >= TARGET_SPEEDUP),
    }
    return result, 0 if ok else 1


def variant(spec, base, ids, ref, modes, shape, device, args, torch) -> dict:
    """Another W8A8 spec (default: static activations with the MLP activation fused into the
    GEMM epilogue), timed against the fp16 numbers already taken; a failure is recorded."""
    dry = args.dry_run
    reps, warmup = (3, 1) if dry else (args.reps, args.warmup)
    gen = torch.Generator().manual_seed(2)
    calib = [({"input_ids": torch.randint(0, base.config.vocab_size, (shape["batch"], shape["seq"]),
                                          generator=gen).to(device)}, None) for _ in range(4)]
    try:
        model = compress(copy.deepcopy(base), spec, device, calib)
        with torch.no_grad():
            got = model(input_ids=ids, output_hidden_states=True)
            out = {"snr_db_last_hidden": snr_db(got.hidden_states[-1], ref.hidden_states[-1])}
            t = time_ms(lambda: model(input_ids=ids), torch, reps, warmup, not dry)
            out["eager"] = {"w8a8": t, "speedup": modes["eager"]["fp16"]["median_ms"] / t["median_ms"]}
            if "cuda_graph" in modes and "error" not in modes["cuda_graph"]:
                g, _ = graph_runner(model, ids, torch)
                t = time_ms(g, torch, reps, warmup)
                out["cuda_graph"] = {"w8a8": t, "speedup": modes["cuda_graph"]["fp16"]["median_ms"] / t["median_ms"]}
        from slimbench.methods.quant.w8a8_fuse import fused_meta
        out["fused_layers"] = len(fused_meta(model))
    except Exception as exc:
        out = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    line = out.get("error") or " ".join(f"{m} {out[m]['speedup']:.3f}x" for m in ("eager", "cuda_graph") if m in out)
    print(f"  variant {spec}: {line}" + (f"; snr {out['snr_db_last_hidden']:.1f} dB, {out['fused_layers']} fused"
                                          if "error" not in out else ""), flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dry-run", action="store_true", help="tiny model on CPU; writes nothing unless --out")
    ap.add_argument("--spec", default="quant.w8a8", help="method spec (default skip keeps the classifier)")
    ap.add_argument("--extra-spec", action="append", default=None,
                    help="further specs timed against the same fp16 numbers (repeatable; default: "
                         "quant.w8a8:activations=static,fuse_act=true)")
    ap.add_argument("--reps", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--batch", type=int, default=0, help="override batch (default 32)")
    ap.add_argument("--seq", type=int, default=0, help="override sequence length (default 128)")
    ap.add_argument("--no-cuda-graph", action="store_true", help="skip the CUDA-graph timings")
    ap.add_argument("--min-snr-db", type=float, default=20.0)
    ap.add_argument("--out", default=None, help="results folder (default results/benchmarks; none in --dry-run)")
    args = ap.parse_args(argv)
    if args.extra_spec is None:
        args.extra_spec = ["quant.w8a8:activations=static,fuse_act=true"]
    result, rc = run(args)
    if not result:
        return rc
    out_dir = args.out or (None if args.dry_run else str(ROOT / "results" / "benchmarks"))
    if out_dir:
        slug = re.sub(r"[^a-z0-9]+", "-", result["device"].lower()).strip("-")
        out = Path(out_dir) / f"e2e-bert-w8a8-{slug}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=1, default=str))
        print(f"wrote {out}")
    print(f"speedup {result['speedup']:.3f}x ({result['speedup_mode']}), target {TARGET_SPEEDUP}x: "
          f"{'met' if result['meets_target'] else 'not met'}; outputs {'agree' if rc == 0 else 'DISAGREE'}")
    return rc


if __name__ == "__main__":
    sys.exit(main())
