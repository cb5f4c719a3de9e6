"""What `slimbench verify` decides, and how its verdicts reach the leaderboard. Pure and torch-free:
`suite.verify` measures, this module compares claimed with measured figures and hands the verdicts over.

Tolerances: what a run's bytes determine is compared exactly (sizes, parameter counts, FLOPs, BOPs,
test examples); sparsity within 1e-6 (it is recorded rounded to 6 decimals); accuracy within a
number of test examples (`accuracy_tolerance`), since another machine's float kernels may flip a
prediction that sits on a decision boundary; latency, when compared at all, within a factor.

The verification record (`slimbench verify --out FILE`; `--json` prints the same):
    {"format": "slimbench-verification", "schema": 1, "created",
     "machine": provenance.collect("cpu", threads) + {"device_label"},
     "options": {"accuracy_tol", "latency", "latency_tol"},
     "bundles": [{"path", "rejected": reason | null, "runs", "finished"}],
     "runs": [{"bundle", "run_key", "record_sha256", "task", "method", "seed",
               "verdict": "verified" | "mismatch" | "cannot verify", "reasons": [...],
               "claimed": {figure: value}, "measured": {figure: value}, "tolerances": {figure: tol},
               "latency": [{"batch_size", "claimed_ms", "measured_ms", "compared"}]}]}

`slimbench leaderboard --verified FILE` reads it (`attach`). Why a file and not a `--verify` flag
that re-measures while the site is built: re-measuring takes minutes per run and needs the
methods, while the site is rebuilt often and its layer never imports them; verifying once and
building many times from the record also lets the check run on another machine (one whose CPU
matches the runs', for latency). A verdict is bound to the exact record it judged by
`record_sha256`: a run.json edited after verification, or another run under the same key, gets
no mark from it.
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Iterable

from slimbench.core.config import ConfigError

FORMAT, SCHEMA = "slimbench-verification", 1
VERIFIED, MISMATCH, CANNOT = "verified", "mismatch", "cannot verify"
EXACT = ("size_bytes", "tensors_bytes", "meta_bytes", "index_bytes", "params_total", "params_nonzero",
         "flops_dense", "flops_effective", "bops", "eval_examples", "eval_tokens")
SPARSITY_TOL = 1e-6
OTHER_DEVICE_ACCURACY_TOL = 0.002  # a run evaluated on a GPU (TF32 convolutions, fp16 kernels), checked on a CPU
# Perplexity is a mean over every test token, so another machine's rounding moves it by far less than
# one flipped example moves accuracy; these are margins, relative to the claimed value, not measurements.
PERPLEXITY_RTOL, OTHER_DEVICE_PERPLEXITY_RTOL = 1e-4, 1e-2
QUALITY_FIGURES = ("accuracy", "balanced_accuracy", "perplexity", "nll", "token_accuracy")
_EPS = 1e-12  # float noise of the comparison itself


def record_digest(record: dict[str, Any]) -> str:
    """SHA-256 of a run record as read from its bundle, minus where it was read from (`provenance.source`,
    the bundle's file name) and any verdict attached since: what a verdict is about."""
    rec = dict(record)
    rec["provenance"] = {k: v for k, v in (record.get("provenance") or {}).items()
                         if k not in ("source", "verification")}
    return hashlib.sha256(json.dumps(rec, sort_keys=True, default=str).encode()).hexdigest()


def accuracy_tolerance(record: dict[str, Any], eval_examples: int | None, given: float | None) -> float:
    """`given`, else one test example (1/eval_examples): the same bytes give the same predictions on
    the same kernels, and another CPU's rounding may flip at most a boundary example or so (measured:
    fashion-mnist quick, baseline / int8 / pruned / bf16 artifacts re-measured under AVX512, AVX2 and
    no-SIMD dispatch and 1 or 2 threads predicted all 2,000 examples identically). A run evaluated on
    another device type (a GPU: TF32 convolutions, fp16 kernels) gets 0.002 at least (20 in 10,000);
    that figure is a margin, not a measurement."""
    if given is not None:
        return given
    one = 1.0 / eval_examples if eval_examples else 0.0
    kind = str((record.get("device") or {}).get("type") or "cpu")
    return one if kind == "cpu" else max(one, OTHER_DEVICE_ACCURACY_TOL)


def perplexity_tolerances(record: dict[str, Any], claimed: dict[str, Any], accuracy_tol: float) -> dict[str, float]:
    """Tolerances of a perplexity run's figures: perplexity within PERPLEXITY_RTOL of the claim
    (OTHER_DEVICE_PERPLEXITY_RTOL for a run evaluated on another device type), the mean NLL within
    the log of that factor, token accuracy like accuracy (`accuracy_tol`, one token by default)."""
    ppl = claimed.get("perplexity")
    if not _number(ppl):
        return {}
    kind = str((record.get("device") or {}).get("type") or "cpu")
    rtol = PERPLEXITY_RTOL if kind == "cpu" else OTHER_DEVICE_PERPLEXITY_RTOL
    return {"perplexity": abs(float(ppl)) * rtol, "nll": math.log1p(rtol), "token_accuracy": accuracy_tol}


def balanced_tolerance(accuracy_tol: float, supports: list[int]) -> float:
    """The balanced-accuracy twin of `accuracy_tol`: as many flipped examples (accuracy_tol x n), each
    moving the mean per-class recall by at most 1 / (classes x smallest class)."""
    seen = [s for s in supports if s > 0]
    if not seen:
        return accuracy_tol
    return accuracy_tol * sum(seen) / (len(seen) * min(seen))


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def compare(claimed: dict[str, Any], measured: dict[str, Any], tolerances: dict[str, float]) -> list[str]:
    """One reason per figure the record claims that the measurement does not give back within its
    tolerance (exact where none is given). A figure the record does not state is not compared: the
    leaderboard shows nothing for it, so it claims nothing."""
    reasons = []
    for key in (*EXACT, "sparsity", *QUALITY_FIGURES):
        c, m = claimed.get(key), measured.get(key)
        if c is None or m is None:
            continue
        tol = tolerances.get(key, 0.0)
        if not _number(c) or not _number(m) or not math.isfinite(float(c)) \
                or abs(float(c) - float(m)) > tol + _EPS:
            within = "exactly" if tol == 0 else f"within {tol:.3g}"
            reasons.append(f"{key}: claimed {_show(c)}, measured {_show(m)} (must match {within})")
    return reasons


def compare_latency(claimed: Iterable[dict[str, Any]], measured: Iterable[dict[str, Any]], comparable: bool,
                    tol: float) -> tuple[list[dict[str, Any]], list[str]]:
    """CPU eager medians per batch size, claimed beside measured, and one reason per batch whose
    medians differ by more than a factor 1 + tol either way (too fast a claim, or too slow a
    baseline, which inflates every speedup) when `comparable` (the same device label and threads)."""
    def cpu(points: Iterable[dict[str, Any]]) -> dict[Any, float]:
        return {p.get("batch_size"): float(p["median_ms"]) for p in points if isinstance(p, dict)
                and p.get("device") == "cpu" and not p.get("graph") and _number(p.get("median_ms"))}

    have, got = cpu(claimed), cpu(measured)
    rows, reasons = [], []
    for bs in sorted(set(have) | set(got), key=lambda b: (not isinstance(b, int), b if isinstance(b, int) else 0)):
        c, m = have.get(bs), got.get(bs)
        rows.append({"batch_size": bs, "claimed_ms": c, "measured_ms": m, "compared": comparable})
        if comparable and c is not None and m is not None and _apart(c, m, tol):
            reasons.append(f"latency (cpu, batch {bs}): claimed {c:.4g} ms, measured {m:.4g} ms "
                           f"(must match within a factor {1 + tol:.3g})")
    return rows, reasons


def _apart(a: float, b: float, tol: float) -> bool:
    """Whether two timings differ by more than a factor 1 + tol (a zero one only equals a zero)."""
    if a <= 0 or b <= 0:
        return a != b
    return max(a / b, b / a) > 1 + tol + _EPS


def _show(v: Any) -> str:
    if isinstance(v, float) and not float(v).is_integer():
        return f"{v:.6g}"
    return str(int(v)) if _number(v) and math.isfinite(float(v)) else repr(v)


def read_record(path: Path) -> dict[str, Any]:
    """A verification record written by `slimbench verify --out`, or ConfigError saying what is wrong."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ConfigError(f"--verified {path}: not a readable JSON file ({type(exc).__name__}: {exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ConfigError(f"--verified {path}: not a verification record (format {FORMAT!r}); "
                         "write one with `slimbench verify BUNDLE --out FILE`")
    if doc.get("schema") != SCHEMA or not isinstance(doc.get("runs"), list):
        raise ConfigError(f"--verified {path}: schema {doc.get('schema')!r}; this slimbench reads schema {SCHEMA}")
    return doc


def attach(runs: list[dict[str, Any]], records: Iterable[dict[str, Any]]) -> dict[str, int]:
    """Set each run's `provenance.verification` from the verification records, dropping any the run
    carried itself (a run cannot vouch for itself). A verdict attaches to the run with its run key
    and record digest only; of several for one run, a mismatch wins. Returns runs per verdict, plus
    `stale`: runs whose key has verdicts, all about another record (one edited since)."""
    best: dict[tuple[str, str], dict[str, Any]] = {}
    rank = {MISMATCH: 0, VERIFIED: 1, CANNOT: 2}
    for doc in records:
        machine = doc.get("machine") if isinstance(doc.get("machine"), dict) else {}
        for e in doc.get("runs") or []:
            if not isinstance(e, dict) or e.get("verdict") not in rank:
                continue
            key = (str(e.get("run_key")), str(e.get("record_sha256")))
            if key not in best or rank[e["verdict"]] < rank[best[key]["verdict"]]:
                best[key] = {**{k: e.get(k) for k in ("verdict", "reasons", "claimed", "measured", "tolerances",
                                                     "latency")},
                             "machine": machine.get("device_label"), "verified_at": doc.get("created")}
    counts = {VERIFIED: 0, MISMATCH: 0, CANNOT: 0, "stale": 0}
    keys = {k for k, _ in best}
    for run in runs:
        prov = run.setdefault("provenance", {})
        prov.pop("verification", None)
        if str(run.get("run_key")) not in keys:
            continue
        hit = best.get((str(run.get("run_key")), record_digest(run)))
        if hit is not None:
            prov["verification"] = hit
            counts[hit["verdict"]] += 1
        else:
            counts["stale"] += 1
    return counts
