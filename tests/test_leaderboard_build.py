"""The leaderboard built from real MLflow runs through `slimbench leaderboard` (no browser)."""
from __future__ import annotations

import argparse
import csv
import importlib.util
import io
import json
import re
from pathlib import Path
from typing import Any

import pytest

from slimbench.leaderboard.command import configure
from slimbench.suite.cli import cmd_leaderboard as run

_STORE_PATH = Path(__file__).parent / "fixtures" / "leaderboard" / "store.py"


def _store_module() -> Any:
    spec = importlib.util.spec_from_file_location("leaderboard_fixture_store", _STORE_PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


store = _store_module()


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="slimbench leaderboard")
    configure(parser)
    return run(parser.parse_args(list(argv)))


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    uri, results = store.shared_store(tmp_path_factory)
    out = tmp_path_factory.mktemp("site")
    assert _cli("--tracking-uri", uri, "--results-dir", str(results), "--out", str(out)) == 0
    return out


def test_command_import_is_light():
    import subprocess
    import sys
    code = ("import sys; import slimbench.leaderboard.command; "
            "print(any(m in sys.modules for m in ('mlflow', 'torch', 'pandas')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_site_files(site: Path):
    for name in ("index.html", "leaderboard.md", "rows.csv", "rows.json", "failed.csv"):
        assert (site / name).stat().st_size > 0
    pages = sorted((site / "runs").glob("*.html"))
    assert len(pages) == len(store.specs()) + 1  # + the killed run


def test_index_is_self_contained(site: Path):
    html = (site / "index.html").read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # nothing fetched from elsewhere
    assert "<script src" not in html and "<link" not in html
    assert "Content-Security-Policy" in html
    for href in set(re.findall(r'href="([^"#][^"]*)"', html)):
        assert (site / href).exists(), href


def test_hostile_strings_are_escaped_everywhere(site: Path):
    hostile = store.HOSTILE
    for path in [site / "index.html", *sorted((site / "runs").glob("*.html"))]:
        text = path.read_text()
        assert hostile not in text, path
        assert "<img" not in text and "<script>window" not in text, path
        assert text.count("<script") == text.count("</script>") == (2 if path.name == "index.html" else 0), path
    assert "&lt;img src=x onerror=alert(1)&gt;&lt;script&gt;" in (site / "index.html").read_text()
    md = (site / "leaderboard.md").read_text()
    assert "<img" not in md and "<script" not in md
    assert "&lt;img src=x onerror=alert(1)&gt;" in md


def test_sections_tables_and_separation(site: Path):
    html = (site / "index.html").read_text()
    assert html.count('<section class="task"') == 2  # toy-text and toy-vision on the test CPU
    vision = html.split('data-task="toy-vision"', 1)[1].split("</section>", 1)[0]
    main = vision.split('data-kind="real"', 1)[1].split("</table>", 1)[0]
    assert "quant.fakequant" not in main and "bits=2" not in main  # simulated, failed: never ranked
    assert main.count("<tr data-row") == 4 * len(store.BATCHES)
    assert "Simulated (not real compression)" in vision
    sim = vision.split('data-kind="simulated"', 1)[1].split("</table>", 1)[0]
    assert sim.count("<tr data-row") == len(store.BATCHES) and "quant.fakequant" in sim
    failed = vision.split('data-kind="failed"', 1)[1].split("</table>", 1)[0]
    assert failed.count("<tr data-row") == 2
    assert "quant.minmax bits=2" in failed and "KILLED" in failed  # the killed run, from MLflow alone
    plots = vision.split('<div class="plots">', 1)[1].split("</div>", 1)[0]
    assert plots.count("<svg") == 1 + len(store.BATCHES)
    assert all(svg.count("<circle") == 4 for svg in plots.split("<svg")[1:])  # 4 real configs each
    assert "quant.fakequant" not in plots


def test_run_page_has_config_provenance_and_command(site: Path):
    html = (site / "index.html").read_text()
    href = re.search(r'<a class="label" href="(runs/[^"]+)"[^>]*>quant\.minmax bits=8</a>', html).group(1)
    page = (site / href).read_text()
    run_id = Path(href).stem
    assert run_id in page  # the MLflow run id, in provenance
    for needle in ("Provenance", "git_commit", "torch", "threads", "Config", "bits",
                   "slimbench run --tasks toy-vision --method quant.minmax:bits=8"):
        assert needle in page
    sim_href = re.search(r'<a class="label" href="(runs/[^"]+)"[^>]*>quant\.fakequant bits=4</a>', html).group(1)
    assert "Simulated (not real compression)" in (site / sim_href).read_text()


def test_exports(site: Path):
    data = json.loads((site / "rows.json").read_text())
    vision = [r for r in data["rows"] if r["task"] == "toy-vision"]
    base = next(r for r in vision if r["method"] == "baseline" and r["batch_size"] == 1)
    assert base["accuracy"] == pytest.approx(0.91)
    assert base["accuracy_ci"] == pytest.approx(4.3027 * 0.01 / 3 ** 0.5, rel=1e-3)
    quant = next(r for r in vision if r["label"] == "quant.minmax bits=8" and r["batch_size"] == 8)
    assert quant["compression"] == pytest.approx(4.0) and quant["speedup"] == pytest.approx(2.0)
    assert quant["accuracy_delta"] == pytest.approx(-0.01)
    assert {r["kind"] for r in vision if r["method"] == "quant.fakequant"} == {"simulated"}
    assert [f["status"] for f in data["failed"]] == ["KILLED", "FAILED"]  # the killed run keeps its MLflow status
    rows = list(csv.DictReader(io.StringIO((site / "rows.csv").read_text())))
    assert len(rows) == len(data["rows"])
    assert {r["label"] for r in rows} == {r["label"] for r in data["rows"]}
    md = (site / "leaderboard.md").read_text()
    assert "## toy-vision · cpu (Test CPU) · quick" in md and "### Simulated (not real compression)" in md
    assert "| quant.minmax bits=8 | quantization | 3 | 90.00 ± 1.24 | -1.00 pp | 1 MB | 4.00× |" in md


def test_publish(tmp_path: Path, tmp_path_factory):
    uri, results = store.shared_store(tmp_path_factory)
    out = tmp_path / "pages"
    assert _cli("publish", "--out", str(out), "--tracking-uri", uri, "--results-dir", str(results)) == 0
    assert (out / "index.html").exists() and (out / ".nojekyll").exists()
    runs = json.loads((out / "data" / "runs.json").read_text())
    assert len(runs) == len(store.specs()) + 1
    assert _cli("publish", "--tracking-uri", uri) == 2  # --out is required


def test_wired_into_the_slimbench_cli(tmp_path: Path, tmp_path_factory, capsys):
    cli = pytest.importorskip("slimbench.suite.cli")
    uri, results = store.shared_store(tmp_path_factory)
    out = tmp_path / "via-cli"
    assert cli.main(["leaderboard", "--tracking-uri", uri, "--results-dir", str(results), "--out", str(out)]) == 0
    assert (out / "index.html").exists() and str(out / "index.html") in capsys.readouterr().out


def test_killed_run_stand_in_carries_its_device_and_task_definition(tmp_path_factory):
    from slimbench.suite.tracking import Tracker

    uri, results = store.shared_store(tmp_path_factory)
    records = Tracker(uri=uri, results_dir=results).read_records()
    killed = next(r for r in records if "no run.json" in str(r.get("error")))
    finished = next(r for r in records if r["task"]["name"] == killed["task"]["name"] and r["status"] == "FINISHED")
    assert killed["device"] == finished["device"]
    assert killed["baseline"]["key"] == finished["baseline"]["key"] != ""


def test_unsupported_runs_are_listed_apart_from_failures(tmp_path):
    """A method that declines ("not here, because...") has not failed: the header counts the two
    apart and each has its own table, in the site and in the Markdown."""
    from slimbench.leaderboard.site import build_site

    spec = importlib.util.spec_from_file_location("leaderboard_fixture_synthetic",
                                                  Path(__file__).parent / "fixtures" / "leaderboard" / "synthetic.py")
    syn = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(syn)
    runs = [syn.fake_run(), syn.fake_run(method="prune.magnitude", family="pruning"),
            syn.fake_run(method="quant.minmax", family="quantization", status="FAILED", error="RuntimeError: boom"),
            syn.fake_run(method="torch.dynamic_int8", family="quantization", status="UNSUPPORTED",
                         error="runs on the CPU only")]
    index = build_site(runs, tmp_path / "site", "t")
    html = index.read_text()
    assert "1 failed runs · 1 unsupported" in html
    failed = html.split("Failed runs</h3>", 1)[1].split("</table>", 1)[0]
    assert "quant.minmax" in failed and "dynamic_int8" not in failed
    unsupported = html.split("Unsupported (not failures", 1)[1].split("</table>", 1)[0]
    assert "torch.dynamic_int8" in unsupported and "runs on the CPU only" in unsupported and "minmax" not in unsupported
    md = (tmp_path / "site" / "leaderboard.md").read_text()
    assert md.index("### Failed runs") < md.index("| FAILED |") < md.index("### Unsupported") \
        < md.index("| UNSUPPORTED |")
