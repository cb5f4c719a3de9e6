"""`slimbench export`: the selected runs of a store as one bundle file (`leaderboard.bundle`), and the
reading side of `slimbench leaderboard --from`: bundles and stores merged into one list of runs."""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

from slimbench.core.record import latest_per_key


def configure(p) -> None:
    p.description = ("Write the selected runs of a tracking store (run.json: config, metrics, latency, device and "
                     "provenance; with --artifacts also the compressed models) into one .tar.gz bundle with a "
                     "manifest of sizes and SHA-256 hashes. The hashes detect damage in transit or storage, not "
                     "edits (anyone can rewrite the manifest): `slimbench verify` re-measures a bundle's artifacts "
                     "(export them with --artifacts) to check its figures. `slimbench leaderboard --from B1 --from "
                     "B2` merges bundles from many machines into one site.")
    p.add_argument("--out", type=Path, required=True, help="the bundle to write (.tar.gz)")
    p.add_argument("--task", help="only this task")
    p.add_argument("--method", help="only this method name")
    p.add_argument("--status", choices=("FINISHED", "FAILED", "UNSUPPORTED", "KILLED"), help="only runs in this status")
    p.add_argument("--artifacts", action="store_true",
                   help="include each run's compressed artifact (what `slimbench verify` re-measures)")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else results/mlflow.db)")
    p.add_argument("--experiment", default=None, help="MLflow experiment (default: slimbench)")
    p.add_argument("--results-dir", type=Path, default=Path("results"),
                   help="results folder holding the default tracking store (default: results)")


def cmd(args) -> int:
    from slimbench.core.config import ConfigError
    from slimbench.leaderboard.bundle import write_bundle
    from slimbench.suite import __version__
    from slimbench.suite.tracking import EXPERIMENT, Tracker

    if not str(args.out).endswith((".tar.gz", ".tgz")):
        raise ConfigError(f"--out {args.out}: a bundle is a .tar.gz (or .tgz) file")
    tracker = Tracker(uri=args.tracking_uri, experiment=args.experiment or EXPERIMENT, results_dir=args.results_dir,
                      create=False)
    records = tracker.read_records(task=args.task, method=args.method, status=args.status)
    if not records:
        print(f"slimbench export: no runs match in {tracker.uri}; nothing written", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        entries = []
        for rec in records:
            run_id = str(rec["provenance"].get("mlflow_run_id") or rec.get("run_key") or "run")
            files: dict[str, Path] = {}
            if args.artifacts and rec.get("status") == "FINISHED":
                files = _artifact_files(tracker, run_id, Path(tmp) / run_id)
                if not files:
                    print(f"slimbench export: run {run_id} has no artifact in the store; exported without it",
                          file=sys.stderr)
            entries.append((run_id, rec, files))
        source = {"experiment": args.experiment or EXPERIMENT, "slimbench": __version__,
                  "filters": {k: v for k, v in (("task", args.task), ("method", args.method),
                                                ("status", args.status)) if v}}
        out = write_bundle(args.out, entries, source)
    size = out.stat().st_size
    print(f"export: {len(records)} run(s) from {tracker.uri} -> {out} ({size} bytes"
          f"{', artifacts included' if args.artifacts else ''})")
    return 0


def _artifact_files(tracker, run_id: str, where: Path) -> dict[str, Path]:
    try:
        local = Path(tracker.client.download_artifacts(run_id, "artifact", str(where)))
    except Exception:  # a run without an artifact (e.g. one written before they were logged)
        return {}
    return {str(f.relative_to(local)): f for f in sorted(local.rglob("*")) if f.is_file()}


def read_sources(sources: list[str], experiment: str | None, log=print) -> tuple[list[dict[str, Any]], list[str]]:
    """Runs from every source (a bundle file, a results folder or a tracking URI), newest per run key,
    and one line per rejected bundle (nothing of it is kept)."""
    from slimbench.leaderboard.bundle import BundleError, read_bundle
    from slimbench.suite.tracking import EXPERIMENT, Tracker

    runs: list[dict[str, Any]] = []  # from stores
    bundled: list[dict[str, Any]] = []
    rejected: list[str] = []
    for src in sources:
        path = Path(src)
        if path.is_file():
            try:
                bundle = read_bundle(path)
            except BundleError as exc:
                rejected.append(f"{src}: rejected: {exc}")
                continue
            bundled += bundle.runs
            log(f"  {src}: {len(bundle.runs)} run(s) from a bundle")
            continue
        if path.is_dir():  # a results folder: its own database, whatever MLFLOW_TRACKING_URI says
            tracker = Tracker(uri=f"sqlite:///{(path / 'mlflow.db').resolve()}", experiment=experiment or EXPERIMENT,
                              results_dir=path, create=False)
        elif "://" in src or src.startswith("sqlite:"):
            tracker = Tracker(uri=src, experiment=experiment or EXPERIMENT, results_dir=Path("results"), create=False)
        else:
            rejected.append(f"{src}: no such bundle file, results folder or tracking URI")
            continue
        found = tracker.read_records()
        for rec in found:
            rec["provenance"].setdefault("source", src)
        runs += found
        log(f"  {src}: {len(found)} run(s) from {tracker.uri}")
    return _first_source_wins(runs + bundled), rejected


def _first_source_wins(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Newest per run key within a source; across sources, a store's run beats a bundle's copy and an
    earlier `--from` beats a later one, so a bundle cannot displace a run by claiming a later start."""
    by_source: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        by_source.setdefault(str(r["provenance"].get("source")), []).append(r)
    seen: set[str] = set()
    out = []
    for group in by_source.values():
        for r in latest_per_key(group):
            key = r.get("run_key")
            if key and key in seen:
                continue
            seen.add(key)
            out.append(r)
    return out
