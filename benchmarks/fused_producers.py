"""Correctness, then speed, of the W8A8 fused producers (issue 23) at BERT-base batch 32 x 128.

    python benchmarks/fused_producers.py [--reps 50] [--out results/benchmarks] [--no-model]
    TRITON_INTERPRET=1 python benchmarks/fused_producers.py --smoke --out /tmp/x   # no GPU: the code paths

M = 4096 tokens, hidden N = 768, fp16 (smoke: M = 64, N = 64 on the CPU through the interpreter).
1. Correctness first (a failure is recorded, its timings skipped, and the script exits 1):
   `layernorm_quant` against torch's add + LayerNorm, its codes against `quantize_act` of its own
   output (must be identical), the stacked Q|K|V GEMM against the three W8A8 layers' kernel paths.
2. Timings, each as the median CUDA-event time of one call with L2 flushed (`event_ms`, launch
   gaps included) and as a CUDA graph of 20 back-to-back calls (`graph_ms`, per call: no launch
   gaps, inputs warm in L2): (a) add + LayerNorm + `quantize_act` (what dynamic W8A8 runs) vs
   `layernorm_quant`, with add + LayerNorm alone (the fp16 model) beside them; (b) three
   quantize + int8 GEMMs (N = 768) vs one quantize + the stacked GEMM (N = 2304) vs the stacked
   GEMM on the producer's codes; (c) fp16: three F.linear and one on the stacked fp16 weight;
   (d) the whole chain add + LayerNorm -> Q, K, V: fp16, W8A8 unfused, W8A8 fused.
3. Unless --no-model or past --model-after seconds: BERT-base (`e2e_bert_w8a8.build_model`) as
   fp16, `quant.w8a8` and `quant.w8a8` + `fuse_bert_producers`, CUDA-graph replays, SNR vs fp16.
Writes results/benchmarks/fused-producers-<device>.json after each part.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_common import median_ms, record_path, rel_err, start  # noqa: E402

DEV = "cuda"
GRAPH_CALLS = 20


def timed(torch, fn, reps: int) -> dict:
    """{event_ms, graph_ms} of `fn` (see the module docstring); on the CPU one call each."""
    if DEV == "cpu":
        return {"event_ms": median_ms(fn, torch, reps, DEV), "graph_ms": median_ms(fn, torch, reps, DEV)}
    from slimbench.suite.measure.latency import capture_graph

    def body():
        for _ in range(GRAPH_CALLS):
            fn()
    replay, _ = capture_graph(body)
    return {"event_ms": median_ms(fn, torch, reps, DEV),
            "graph_ms": median_ms(replay, torch, reps, DEV, flush=False) / GRAPH_CALLS}


def operands(torch, m: int, n: int):
    from torch import nn

    from slimbench.methods.quant.w8a8 import W8A8Linear

    g = torch.Generator().manual_seed(0)
    x, r = (torch.randn(m, n, generator=g).to(DEV, torch.float16) for _ in range(2))
    w = (torch.rand(n, generator=g) + 0.5).to(DEV, torch.float16)
    b = (torch.randn(n, generator=g) * 0.1).to(DEV, torch.float16)
    lins = [nn.Linear(n, n).to(DEV) for _ in range(3)]
    qkv = [W8A8Linear.from_linear(lin, None) for lin in lins]
    return x, r, w, b, lins, qkv


def correctness(torch, F, ops, result: dict) -> None:
    from slimbench.methods.quant.kernels import fused_producers as fp, w8a8
    from slimbench.methods.quant.w8a8 import quantize_per_token

    x, r, w, b, _, qkv = ops
    n = x.shape[1]
    checks = result["correctness"]

    def record(name, err_of, tol):
        try:
            err = float(err_of())
            checks[name] = {"err": err, "tol": tol, "ok": bool(err <= tol)}
        except Exception as exc:  # a compile error or a bad launch: recorded, the rest still runs
            checks[name] = {"err": None, "tol": tol, "ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
        print(name, checks[name], flush=True)

    y, q, s = fp.layernorm_quant(x, w, b, 1e-12, r)
    ref = F.layer_norm(x + r, (n,), w, b, 1e-12)
    record("layernorm_quant y vs torch add+layer_norm (rel)", lambda: rel_err(y, ref), 2e-3)
    qa, sa = w8a8.quantize_act(y)
    record("layernorm_quant codes vs quantize_act(y) (mismatches)", lambda: int((q != qa).sum() + (s != sa).sum()), 0)
    qc, sc = quantize_per_token(y.float().cpu())  # torch on the CPU: the GPU division may round otherwise
    record("layernorm_quant codes vs torch per-token (max code diff)",
           lambda: (q.cpu().int() - qc.int()).abs().max(), 1)
    record("layernorm_quant scales vs torch per-token (rel)", lambda: rel_err(s.cpu(), sc), 1e-6)
    fw = fp.fuse_w8a8_weights(qkv)
    with torch.no_grad():
        refs = [lay.kernel_forward(y) for lay in qkv]
    record("stacked qkv vs three W8A8 kernel paths (rel)",
           lambda: max(rel_err(o, t) for o, t in zip(fp.fused_linear(y, fw), refs)), 1e-3)
    record("stacked qkv on producer codes vs three W8A8 kernel paths (rel)",
           lambda: max(rel_err(o, t) for o, t in zip(fp.fused_linear(None, fw, (q, s), torch.float16), refs)), 1e-3)


def timings(torch, F, ops, reps: int, result: dict, save) -> None:
    from slimbench.methods.quant.kernels import fused_producers as fp, w8a8

    x, r, w, b, lins, qkv = ops
    n = x.shape[1]
    ok = result["correctness"]
    ln_ok = all(v["ok"] for k, v in ok.items() if k.startswith("layernorm_quant"))
    qkv_ok = all(v["ok"] for k, v in ok.items() if k.startswith("stacked"))
    fw = fp.fuse_w8a8_weights(qkv)
    y, q, s = fp.layernorm_quant(x, w, b, 1e-12, r)
    wh = [lin.weight.half() for lin in lins]
    bh = [lin.bias.half() for lin in lins]
    w_cat, b_cat = torch.cat(wh), torch.cat(bh)

    def ln():
        return F.layer_norm(x + r, (n,), w, b, 1e-12)

    def three_w8a8(h):
        return [lay.kernel_forward(h) for lay in qkv]

    def three_fp16(h):
        return [F.linear(h, wi, bi) for wi, bi in zip(wh, bh)]

    cases = {  # name: (fn, runs only if these checks passed)
        "a fp16 add+layernorm": (ln, True),
        "a w8a8 add+layernorm+quantize_act": (lambda: w8a8.quantize_act(ln()), True),
        "a fused layernorm_quant": (lambda: fp.layernorm_quant(x, w, b, 1e-12, r), ln_ok),
        "b w8a8 3x(quantize_act+int8_gemm)": (lambda: three_w8a8(y), True),
        "b w8a8 quantize_act+stacked gemm": (lambda: fp.fused_linear(y, fw), qkv_ok),
        "b w8a8 stacked gemm on codes": (lambda: fp.fused_linear(None, fw, (q, s), torch.float16), qkv_ok),
        "c fp16 3x F.linear": (lambda: three_fp16(y), True),
        "c fp16 stacked F.linear": (lambda: F.linear(y, w_cat, b_cat).split(n, -1), True),
        "d fp16 chain": (lambda: three_fp16(ln()), True),
        "d w8a8 unfused chain": (lambda: three_w8a8(ln()), True),
        "d w8a8 fused chain": (lambda: fp.fused_linear(None, fw, fp.layernorm_quant(x, w, b, 1e-12, r)[1:],
                                                      torch.float16), ln_ok and qkv_ok),
    }
    t = result["timings"]
    for name, (fn, run) in cases.items():
        if not run:
            t[name] = {"skipped": "its correctness check failed"}
            continue
        try:
            with torch.inference_mode():
                t[name] = timed(torch, fn, reps)
        except Exception as exc:
            t[name] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
        print(name, t[name], flush=True)
        save()

    def ratio(num, den, key):
        a, c = t.get(num, {}).get(key), t.get(den, {}).get(key)
        return a / c if a and c else None
    three = "b w8a8 3x(quantize_act+int8_gemm)"
    pairs = {"a unfused/fused LN": ("a w8a8 add+layernorm+quantize_act", "a fused layernorm_quant"),
             "a fused LN / fp16 LN (cost of the int8 write)": ("a fused layernorm_quant", "a fp16 add+layernorm"),
             "b three/stacked (one quantize each)": (three, "b w8a8 quantize_act+stacked gemm"),
             "b three/stacked on codes": (three, "b w8a8 stacked gemm on codes"),
             "b+c fp16 3x linear / stacked on codes": ("c fp16 3x F.linear", "b w8a8 stacked gemm on codes"),
             "c fp16 3x / stacked": ("c fp16 3x F.linear", "c fp16 stacked F.linear"),
             "d fp16 / w8a8 unfused": ("d fp16 chain", "d w8a8 unfused chain"),
             "d fp16 / w8a8 fused": ("d fp16 chain", "d w8a8 fused chain"),
             "d unfused / fused": ("d w8a8 unfused chain", "d w8a8 fused chain")}
    result["ratios"] = {key: {name: ratio(num, den, key) for name, (num, den) in pairs.items()}
                        for key in ("event_ms", "graph_ms")}
    print("ratios", json.dumps(result["ratios"], indent=1), flush=True)
    save()


def model(torch, reps: int, smoke: bool, result: dict, save) -> None:
    """BERT-base fp16 vs quant.w8a8 vs quant.w8a8 + fuse_bert_producers (CUDA-graph replays)."""
    from e2e_bert_w8a8 import FULL, TINY, build_model, compress, snr_db
    from gpu_common import capture_graph

    from slimbench.methods.quant.w8a8_producers import fuse_bert_producers

    shape = TINY if smoke else FULL
    dtype = torch.float32 if smoke else torch.float16
    base = build_model(shape, DEV, dtype)
    quant = compress(copy.deepcopy(base), "quant.w8a8", torch.device(DEV))
    fused = copy.deepcopy(quant)
    report = fuse_bert_producers(fused, kernel=True if smoke else None)
    ids = {"input_ids": torch.randint(0, base.config.vocab_size, (shape["batch"], shape["seq"]),
                                      generator=torch.Generator().manual_seed(1)).to(DEV)}
    entry = {"model": "BertForSequenceClassification (random init)", **shape, "dtype": str(dtype),
             "rewritten": {k: len(v) for k, v in report.items()}, "kept": report["kept"][:4]}
    with torch.inference_mode():
        ref, got_q, got_f = (m(**ids).logits for m in (base, quant, fused))
    entry.update(snr_db_w8a8=snr_db(got_q, ref), snr_db_fused=snr_db(got_f, ref),
                 snr_db_fused_vs_w8a8=snr_db(got_f, got_q))
    for name, m in (("fp16", base), ("w8a8", quant), ("w8a8_fused", fused), ("fp16_repeat", base)):
        with torch.inference_mode():
            fn = (lambda m=m: m(**ids)) if smoke else capture_graph(m, ids, torch)[0]
            entry[f"{name}_graph_ms"] = median_ms(fn, torch, reps, DEV, flush=False)
    entry["speedup_w8a8"] = entry["fp16_graph_ms"] / entry["w8a8_graph_ms"]
    entry["speedup_fused"] = entry["fp16_graph_ms"] / entry["w8a8_fused_graph_ms"]
    entry["noise_pct"] = 100 * abs(entry["fp16_repeat_graph_ms"] / entry["fp16_graph_ms"] - 1)
    result["model"] = entry
    print(entry, flush=True)
    save()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--out", default=str(ROOT / "results" / "benchmarks"))
    ap.add_argument("--no-model", action="store_true", help="kernels only (skip the BERT-base comparison)")
    ap.add_argument("--model-after", type=float, default=30.0,
                    help="skip the model part when the kernels took longer than this many seconds")
    ap.add_argument("--smoke", "--dry-run", action="store_true", help="every path on tiny shapes on the CPU "
                    "through the Triton interpreter (needs TRITON_INTERPRET=1); timings are meaningless")
    args = ap.parse_args(argv)
    import torch
    import torch.nn.functional as F

    global DEV
    t0 = time.perf_counter()
    name, code = start("fused_producers", args.smoke, torch)
    if name is None:
        return code
    DEV = "cpu" if args.smoke else "cuda"
    import triton

    m, n = (64, 64) if args.smoke else (4096, 768)
    result = {"device": name, "torch": torch.__version__, "triton": triton.__version__, "reps": args.reps,
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "shape": {"M": m, "N": n, "dtype": "float16"}, "graph_calls": GRAPH_CALLS,
              "correctness": {}, "timings": {}, "ratios": {}, "model": None, "complete": False}
    out = record_path(args.out, "fused-producers", name)

    def save():
        out.write_text(json.dumps(result, indent=1, default=str))
    ops = operands(torch, m, n)
    correctness(torch, F, ops, result)
    save()
    timings(torch, F, ops, args.reps, result, save)
    if args.no_model:
        result["model"] = {"skipped": "--no-model"}
    elif time.perf_counter() - t0 > args.model_after:
        result["model"] = {"skipped": f"kernels took {time.perf_counter() - t0:.0f} s > --model-after"}
    else:
        try:
            model(torch, args.reps, args.smoke, result, save)
        except Exception as exc:
            result["model"] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
            print("model part failed:", result["model"]["error"], flush=True)
    result["complete"] = True
    save()
    bad = [k for k, v in result["correctness"].items() if not v["ok"]]
    print(f"wrote {out} ({time.perf_counter() - t0:.0f} s)" + (f"; FAILED: {', '.join(bad)}" if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
