"""The `slimbench leaderboard` subcommand.

    slimbench leaderboard [--out DIR] [--tracking-uri URI] [--experiment NAME]
    slimbench leaderboard publish --out DIR [--tracking-uri URI] [--experiment NAME]

Import-light on purpose (the CLI imports every subcommand to build its help): MLflow and
the site builder are imported inside `run`.
"""
from __future__ import annotations

import argparse
from pathlib import Path

def configure(parser: argparse.ArgumentParser) -> None:
    """Add the subcommand's arguments to `parser`."""
    parser.description = ("Build a self-contained static leaderboard site (plus Markdown, CSV and JSON "
                          "exports) from the MLflow runs of a tracking store. `publish` writes a folder "
                          "ready for static hosting, with the run data it was built from.")
    parser.add_argument("action", nargs="?", choices=("build", "publish"), default="build",
                        help="build (default) or publish (requires --out)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default for build: RESULTS_DIR/leaderboard, i.e. results/leaderboard)")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else results/mlflow.db)")
    parser.add_argument("--experiment", default=None, help="MLflow experiment (default: slimbench)")
    parser.add_argument("--results-dir", type=Path, default=Path("results"),
                        help="results folder holding the default tracking store (default: results)")
    parser.add_argument("--title", default="slimbench leaderboard", help="page and report title")


def run(args: argparse.Namespace) -> int:
    """Load the runs, build (or publish) the site; returns the process exit code."""
    import sys

    action = getattr(args, "action", "build") or "build"
    out = getattr(args, "out", None)
    if action == "publish" and out is None:
        print("slimbench leaderboard publish: --out DIR is required", file=sys.stderr)
        return 2
    from slimbench.leaderboard.rows import load_runs
    from slimbench.leaderboard.site import build_site, publish
    from slimbench.suite.tracking import EXPERIMENT, Tracker

    results_dir = Path(getattr(args, "results_dir", None) or "results")
    tracker = Tracker(uri=getattr(args, "tracking_uri", None),
                      experiment=getattr(args, "experiment", None) or EXPERIMENT, results_dir=results_dir,
                      create=False)
    runs = load_runs(tracker)
    title = getattr(args, "title", None) or "slimbench leaderboard"
    target = Path(out) if out is not None else results_dir / "leaderboard"
    index = (publish if action == "publish" else build_site)(runs, target, title)
    print(f"leaderboard: {len(runs)} runs from {tracker.uri} -> {index}")
    return 0
