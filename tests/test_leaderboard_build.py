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
    assert main.count("<tr data-row") == 4  # one row per configuration: the batch sizes are columns
    for bs in store.BATCHES:
        assert main.count(f'data-col-batch="{bs}">') == 4 * 3 + 3  # latency, speedup, memory; + the headers
    assert "Simulated (not real compression)" in vision
    sim = vision.split('data-kind="simulated"', 1)[1].split("</table>", 1)[0]
    assert sim.count("<tr data-row") == 1 and "quant.fakequant" in sim
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


def _synthetic_fixture() -> Any:
    spec = importlib.util.spec_from_file_location("leaderboard_fixture_synthetic",
                                                  Path(__file__).parent / "fixtures" / "leaderboard" / "synthetic.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _lm_run(method: str, family: str, config: dict | None, seed: int, perplexity: float, size: float,
            latency_ms: float) -> dict[str, Any]:
    """A language-model task's run.json: perplexity (lower is better) and its companions, no accuracy."""
    import math

    r = _synthetic_fixture().fake_run("tiny-lm", method, family, config, seed, size_bytes=size, latency_ms=latency_ms)
    r["task"].update(kind="lm", metric="perplexity", num_classes=None)
    for key in ("accuracy", "balanced_accuracy"):
        del r["metrics"][key]
    r["metrics"].update(perplexity=perplexity, nll=math.log(perplexity), token_accuracy=0.31, eval_tokens=40_000)
    return r


@pytest.fixture(scope="module")
def lm_runs() -> list[dict[str, Any]]:
    """Baseline (perplexity 20), quant.minmax (22: 10% worse, 4x smaller) and prune.magnitude (30:
    worse and larger than quant.minmax, so off the front), beside an accuracy task."""
    syn = _synthetic_fixture()
    runs = [_lm_run("baseline", "reference", None, 0, 20.0, 4e6, 2.0)]
    runs += [_lm_run("quant.minmax", "quantization", {"bits": 8}, s, p, 1e6, 1.0) for s, p in ((0, 21.0), (1, 23.0))]
    runs.append(_lm_run("prune.magnitude", "pruning", {"sparsity": 0.5}, 0, 30.0, 2e6, 1.5))
    runs += [syn.fake_run(method="baseline", accuracy=0.9), syn.fake_run(method="quant.minmax", family="quantization",
                                                                         config={"bits": 8}, accuracy=0.88)]
    return runs


def test_a_perplexity_task_is_read_by_its_metric(lm_runs):
    """Lower perplexity is better: it sorts first, deltas are relative, CIs are in perplexity, and
    the front keeps the low-perplexity and low-cost points; the accuracy task beside it is unchanged."""
    from slimbench.core.pareto import pareto_front
    from slimbench.leaderboard.rows import aggregate

    lm, vision = aggregate(lm_runs).sections
    assert lm.key[0] == "tiny-lm" and lm.metric == "perplexity" and vision.metric == "accuracy"
    one = {r.label: r for r in lm.real if r.batch_size == 1}
    assert [r.label for r in lm.real if r.batch_size == 1] == ["baseline", "quant.minmax bits=8",
                                                                "prune.magnitude sparsity=0.5"]
    q, p = one["quant.minmax bits=8"], one["prune.magnitude sparsity=0.5"]
    assert q.quality == pytest.approx(22.0) and q.quality_delta == pytest.approx(0.10)
    assert q.quality_ci == pytest.approx(12.7062, rel=1e-4)  # t(1) · sd / √n in perplexity, sd = √2, n = 2
    assert p.quality_delta == pytest.approx(0.50) and q.score > p.score
    assert q.accuracy is None and q.accuracy_delta is None  # no accuracy on this task
    assert pareto_front([(r.score, r.size_bytes) for r in one.values()]) == [True, True, False]
    v = next(r for r in vision.real if r.method == "quant.minmax")
    assert v.quality == v.accuracy == pytest.approx(0.88) and v.quality_delta == pytest.approx(-0.02)


def test_a_perplexity_task_renders_with_its_metric(lm_runs, tmp_path):
    from slimbench.leaderboard.site import build_site

    html = build_site(lm_runs, tmp_path, "t").read_text()
    lm = html.split('data-task="tiny-lm"', 1)[1].split("</section>", 1)[0]
    table = lm.split('data-kind="real"', 1)[1].split("</table>", 1)[0]
    assert "Perplexity ↓</button>" in table and "Δ perplexity" in table and "Accuracy" not in table
    labels = re.findall(r'<a class="label" [^>]*>([^<]+)</a>', table)
    assert labels == ["baseline", "quant.minmax bits=8", "prune.magnitude sparsity=0.5"]  # best first
    assert ">22.00 <span class=\"ci\">± 12.71</span>" in table and ">+10.0%</td>" in table and ">+50.0%</td>" in table
    size_plot = lm.split('<svg class="plot"', 2)[1]
    assert "Perplexity vs size" in size_plot and "perplexity (lower is better, drawn up)" in size_plot
    fronts = dict(re.findall(r'data-label="([^"]+)" data-href="[^"]+" data-front="(\d)"', size_plot))
    assert fronts == {"baseline": "1", "quant.minmax bits=8": "1", "prune.magnitude sparsity=0.5": "0"}
    cy = {lab: float(y) for y, lab in re.findall(r'cy="([\d.]+)" r="\d+" data-label="([^"]+)"', size_plot)}
    assert cy["baseline"] < cy["quant.minmax bits=8"] < cy["prune.magnitude sparsity=0.5"]  # better is up
    vision = html.split('data-task="toy-vision"', 1)[1].split("</section>", 1)[0]
    assert "Accuracy % ↑</button>" in vision and ">-2.00 pp</td>" in vision and "Accuracy vs size" in vision

    md = (tmp_path / "leaderboard.md").read_text()
    lm_md = md.split("## tiny-lm", 1)[1].split("## ", 1)[0]
    assert "| Method | Family | Seeds | Perplexity ↓ | Δ perplexity | Size |" in lm_md
    rows = [line for line in lm_md.splitlines() if line.startswith("| ") and "Method" not in line]
    assert [r.split(" | ")[0] for r in rows] == ["| baseline", "| quant.minmax bits=8",
                                                 "| prune.magnitude sparsity=0.5"]
    assert "| quant.minmax bits=8 | quantization | 2 | 22.00 ± 12.71 | +10.0% | 1 MB | 4.00× |" in lm_md

    data = json.loads((tmp_path / "rows.json").read_text())
    q = next(r for r in data["rows"] if r["task"] == "tiny-lm" and r["method"] == "quant.minmax")
    assert q["metric"] == "perplexity" and q["quality"] == pytest.approx(22.0) and q["accuracy"] is None

    href = re.search(r'<a class="label" href="(runs/[^"]+)"[^>]*>quant\.minmax bits=8</a>', table).group(1)
    page = (tmp_path / href).read_text()
    assert "perplexity ↓ (lower is better)" in page and "<td class=\"str\">perplexity ↓</td>" in page


def test_control_notes_follow_the_metric(lm_runs):
    """A distilled LM against its no-teacher control: the gap is relative, and lower perplexity beat it."""
    from slimbench.leaderboard.rows import aggregate

    runs = [lm_runs[0], _lm_run("distill.scratch", "distillation", {"width": 0.5}, 0, 25.0, 1e6, 1.0)]
    kd = _lm_run("distill.kd", "distillation", {"width": 0.5, "temperature": 4}, 0, 22.5, 1e6, 1.0)
    kd["method_metrics"] = {"control": {"method": "distill.scratch", "config": {"width": 0.5}}}
    row = next(r for r in aggregate([*runs, kd]).sections[0].real if r.method == "distill.kd")
    assert row.note == "beat (no seed CI: one seed) the control distill.scratch width=0.5 (-10.0%; 1 vs 1 seed)"
