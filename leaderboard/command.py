"""The `slimbench leaderboard` subcommand's arguments.

    slimbench leaderboard [--out DIR] [--tracking-uri URI] [--experiment NAME]
    slimbench leaderboard publish --out DIR [--tracking-uri URI] [--experiment NAME]
    slimbench leaderboard --from bundle1.tar.gz --from bundle2.tar.gz [--from results/] ...
    slimbench leaderboard --from bundle.tar.gz --verified verification.json

Import-light on purpose (the CLI imports every subcommand to build its help). The command
itself is `suite.cli.cmd_leaderboard`: it reads the runs through the suite's tracker and hands
the records to `site.build_site` / `site.publish`, so the leaderboard never imports the suite.
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
    parser.add_argument("--from", dest="sources", action="append", metavar="SOURCE",
                        help="build from this source instead of the default store (repeatable): a bundle written by "
                             "`slimbench export`, a results folder or a tracking URI. Rows of different devices are "
                             "never merged, and each run page names its source. A malformed or damaged bundle (a "
                             "member that does not match the manifest's size or SHA-256) is rejected with the reason "
                             "and nothing from it is shown (exit code 1). The hashes detect damage in transit or "
                             "storage, not edits: anyone can rewrite the manifest (see --verified)")
    parser.add_argument("--verified", action="append", metavar="FILE",
                        help="a verification record written by `slimbench verify BUNDLE --out FILE` (repeatable): "
                             "rows whose runs were all re-measured and matched get a ✓, rows with a run that did "
                             "not a ✗ (claimed vs measured on its run page); the rest stay blank. A verdict applies "
                             "only to the very run.json it judged")
