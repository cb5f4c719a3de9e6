"""Unit tests of the leaderboard's pure pieces: statistics, Pareto front, aggregation, escaping."""
from __future__ import annotations

import importlib.util
import json
import math
import re
from pathlib import Path

import pytest

from slimbench.leaderboard import fmt
from slimbench.leaderboard.export import md_cell, to_csv, to_json, to_markdown
from slimbench.leaderboard.page import embed_json
from slimbench.leaderboard.plots import Point, scatter_svg
from slimbench.leaderboard.rows import aggregate
from slimbench.leaderboard.stats import mean_ci, median, pareto_front, t_quantile_975


def _synthetic():
    """tests/fixtures/leaderboard/synthetic.py, by path (tests/ is not a package)."""
    path = Path(__file__).parent / "fixtures" / "leaderboard" / "synthetic.py"
    spec = importlib.util.spec_from_file_location("leaderboard_fixture_synthetic", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_fixture = _synthetic()
fake_run, synthetic_runs = _fixture.fake_run, _fixture.synthetic_runs


def test_t_quantile_table_and_expansion():
    assert t_quantile_975(1) == pytest.approx(12.7062, abs=1e-4)
    assert t_quantile_975(2) == pytest.approx(4.3027, abs=1e-4)
    assert t_quantile_975(30) == pytest.approx(2.0423, abs=1e-4)
    assert t_quantile_975(60) == pytest.approx(2.0003, abs=1e-4)
    assert t_quantile_975(10_000) == pytest.approx(1.96, abs=1e-3)
    with pytest.raises(ValueError):
        t_quantile_975(0)


def test_t_quantile_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 3, 7, 29, 31, 45, 100, 1000):
        assert t_quantile_975(df) == pytest.approx(stats.t.ppf(0.975, df), abs=2e-4)


def test_mean_ci():
    mean, ci = mean_ci([0.90, 0.91, 0.92])
    assert mean == pytest.approx(0.91)
    assert ci == pytest.approx(4.3027 * 0.01 / math.sqrt(3), rel=1e-4)
    assert mean_ci([0.5]) == (0.5, None)
    assert mean_ci([]) == (None, None)
    assert mean_ci([1.0, None, float("nan"), 3.0])[0] == pytest.approx(2.0)
    assert median([3, 1, 2]) == 2 and median([4, 1, 2, 3]) == 2.5 and median([None]) is None


@pytest.mark.parametrize("points, expected", [
    ([], []),
    ([(0.9, 1.0)], [True]),
    # (accuracy, cost): the second is dominated (less accurate and costlier)
    ([(0.9, 1.0), (0.8, 2.0), (0.95, 3.0)], [True, False, True]),
    # equal cost: only the more accurate survives; equal accuracy: only the cheaper
    ([(0.9, 1.0), (0.85, 1.0), (0.9, 2.0)], [True, False, False]),
    # exact duplicates of a front point are both on the front
    ([(0.9, 1.0), (0.9, 1.0), (0.7, 0.5)], [True, True, True]),
])
def test_pareto_front(points, expected):
    assert pareto_front(points) == expected


def test_pareto_front_matches_brute_force():
    import random
    rng = random.Random(1)
    pts = [(round(rng.random(), 2), round(rng.random(), 2)) for _ in range(300)]
    brute = [not any(q[0] >= p[0] and q[1] <= p[1] and q != p for q in pts) for p in pts]
    assert pareto_front(pts) == brute


def test_scatter_svg_one_mark_per_point_front_and_escaping():
    pts = [Point(1.0, 0.9, "a", "runs/a.html", "quantization", "d"),
           Point(2.0, 0.8, "<b>x</b>", "runs/b.html", "nope\"", "d"),
           Point(3.0, 0.95, "c", "runs/c.html", "pruning", "d")]
    svg = scatter_svg(pts, "t", "size", fmt.size)
    assert svg.count("<circle") == 3
    # colours are keyed by family name (core.families), an unknown family gets the neutral class
    assert "fam-quantization" in svg and "fam-pruning" in svg and "fam-x" in svg
    assert re.findall(r'data-front="(\d)"', svg) == ["1", "0", "1"]
    assert "<b>" not in svg and "&lt;b&gt;" in svg and 'nope"' not in svg
    assert scatter_svg([], "t", "size", fmt.size).count("<circle") == 0


def test_embed_json_cannot_close_the_script():
    text = embed_json({"x": "</script><!-- & \u2028"})
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == {"x": "</script><!-- & \u2028"}


def test_md_cell_is_inert():
    cell = md_cell("<img src=x onerror=alert(1)> | [a](javascript:x) *b*\nline")
    assert "<" not in cell and "\n" not in cell
    assert "\\|" in cell and "\\[" in cell and "\\*" in cell


def test_aggregate_baseline_deltas_and_separation():
    runs = [fake_run(method="baseline", seed=s, accuracy=a, size_bytes=4e6, latency_ms=2.0)
            for s, a in ((0, 0.9), (1, 0.92))]
    runs += [fake_run(method="m", family="pruning", config={"k": 1}, seed=s, accuracy=0.85, size_bytes=1e6,
                      latency_ms=0.5) for s in (0, 1)]
    runs.append(fake_run(method="m", family="pruning", config={"k": 2}, seed=0, status="FAILED"))
    runs.append(fake_run(method="sim", family="quantization", seed=0, accuracy=0.99, simulated=True))
    board = aggregate(runs)
    (sec,) = board.sections
    assert [r.label for r in sec.real] == ["baseline", "baseline", "m k=1", "m k=1"]
    base, m = sec.real[0], sec.real[2]
    assert base.is_baseline and base.accuracy == pytest.approx(0.91) and base.n_seeds == 2
    assert m.accuracy_delta == pytest.approx(-0.06)
    assert m.compression == pytest.approx(4.0)
    assert (m.batch_size, m.speedup) == (1, pytest.approx(4.0))
    assert [r.label for r in sec.simulated] == ["sim", "sim"]
    assert [(f.label, f.status) for f in sec.failed] == [("m k=2", "FAILED")]
    assert len(board.pages) == len(runs) and len({p for p, _ in board.pages}) == len(runs)


def test_synthetic_runs_are_current_records_of_real_methods():
    """The fixture writes the record schema the harness writes (reading it back changes nothing it
    wrote; a field it lacks is one newer than it, read as empty) and names registered methods, but
    for its simulated plugin."""
    from slimbench.core.record import SCHEMA, RunRecord
    from slimbench.methods import METHODS

    runs = synthetic_runs(300) + [fake_run(device="cuda"), fake_run(status="FAILED")]
    for r in runs:
        rec = RunRecord.from_dict(r).to_dict()
        assert r["schema"] == SCHEMA and {k: rec[k] for k in r} == r
        assert not any(rec[k] for k in rec.keys() - r.keys())
    names = {r["method"]["name"] for r in runs}
    assert names - set(METHODS.names()) == {_fixture.SIMULATED}
    assert all(r["method"]["simulated"] == (r["method"]["name"] == _fixture.SIMULATED) for r in runs)


def test_exports_hold_the_same_rows():
    board = aggregate(synthetic_runs(120))
    rows = board.rows()
    data = json.loads(to_json(board))
    assert len(data["rows"]) == len(rows) and len(data["failed"]) == len(board.failed())
    assert {r["kind"] for r in data["rows"]} <= {"real", "simulated"}
    assert len(to_csv(board).strip().splitlines()) == len(rows) + 1
    md = to_markdown(board)
    assert md.count("## ") >= len(board.sections)
    configs = {tuple(r.pages) for r in rows}  # the Markdown, like the HTML, has one row per configuration
    assert len(configs) < len(rows)
    assert sum(1 for line in md.splitlines() if line.startswith("| ") and "Method" not in line) == \
        len(configs) + len(board.failed())


def test_build_site_empty_and_rebuild_drops_stale_pages(tmp_path):
    from slimbench.leaderboard.site import build_site
    runs = [fake_run(method="baseline", seed=s, run_id=f"r{s}") for s in range(3)]
    runs.append(fake_run(method="odd", seed=3, run_id="r/../x"))
    runs[-1]["method"]["config"], runs[-1]["seed"] = "not-a-dict", "x"  # tolerated, not trusted
    build_site(runs, tmp_path)
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["r0.html", "r1.html", "r2.html", "r____x.html"]
    index = build_site([], tmp_path)
    assert "No runs yet" in index.read_text() and list((tmp_path / "runs").iterdir()) == []


def test_failed_run_without_device_name_joins_its_task_section():
    runs = [fake_run(method="baseline", device_name="Test CPU"),
            fake_run(method="m", status="FAILED", device_name="Test CPU")]
    runs[1]["device"] = {"type": "cpu"}  # a stand-in from MLflow tags may lack the name
    (sec,) = aggregate(runs).sections
    assert sec.key[2] == "cpu (Test CPU)" and [f.method for f in sec.failed] == ["m"]


def test_family_colours_do_not_depend_on_order():
    from slimbench.core.families import FAMILY_COLOURS
    from slimbench.leaderboard.plots import family_css

    css = family_css()
    for family, colour in FAMILY_COLOURS.items():
        assert f"circle.fam-{family} {{ fill: {colour}; }}" in css
    assert "fam-0" not in css


def test_devices_of_different_capabilities_never_share_a_section():
    """Two machines that report the same CPU name but different instruction sets measured very
    different latencies: each gets its own section, with its own baseline."""
    from slimbench.leaderboard.rows import aggregate

    runs = []
    for isa, flags, ms in (("AVX512", ["avx512f", "avx512_vnni"], 7.2), ("AVX2", ["avx2"], 227.0)):
        for method in ("baseline", "quant.w8a8"):
            r = fake_run(method=method, family="quantization", latency_ms=ms, device_name="AMD EPYC", seed=0)
            r["device"]["capability"] = {"isa": isa, "flags": flags}
            r["run_key"] += isa
            runs.append(r)
    board = aggregate(runs)
    assert [s.key[2] for s in board.sections] == ["cpu (AMD EPYC · AVX2)", "cpu (AMD EPYC · AVX512 VNNI)"]
    for sec in board.sections:
        w8a8 = next(r for r in sec.real if r.method == "quant.w8a8" and r.batch_size == 1)
        assert w8a8.speedup == 1.0  # compared with its own machine's baseline


def test_task_definitions_never_share_a_section():
    """A changed split or recipe (another baseline key) is another benchmark: its rows are compared
    with its own baseline, and the titles say which definition each section is."""
    from slimbench.leaderboard.export import section_title
    from slimbench.leaderboard.rows import aggregate

    runs = []
    for definition, acc in (("aaaaaaaa1111", 0.90), ("bbbbbbbb2222", 0.80)):
        for method, delta in (("baseline", 0.0), ("quant.minmax", -0.01)):
            r = fake_run(method=method, family="quantization", accuracy=acc + delta)
            r["baseline"], r["run_key"] = {"key": definition}, r["run_key"] + definition
            runs.append(r)
    board = aggregate(runs)
    assert [s.key[3] for s in board.sections] == ["aaaaaaaa1111", "bbbbbbbb2222"]
    assert [section_title(s) for s in board.sections] == [
        "toy-vision · cpu (Test CPU) · quick · task definition aaaaaaaa",
        "toy-vision · cpu (Test CPU) · quick · task definition bbbbbbbb"]
    for sec in board.sections:
        row = next(r for r in sec.real if r.method == "quant.minmax")
        assert abs(row.accuracy_delta + 0.01) < 1e-9
    assert section_title(aggregate(runs[:2]).sections[0]) == "toy-vision · cpu (Test CPU) · quick"


def test_pruning_rows_show_sparsity_notes_and_their_plot(tmp_path):
    """The sparsity shown is the suite's measurement (`metrics.sparsity`), never what the method says
    of itself (`method_metrics.sparsity`: here a method that claims more than it delivers)."""
    from slimbench.leaderboard.export import to_markdown
    from slimbench.leaderboard.rows import aggregate
    from slimbench.leaderboard.site import build_site

    runs = [fake_run(method="baseline", accuracy=0.9)]
    runs[0]["metrics"]["sparsity"] = 0.0
    for s, acc in ((0.5, 0.89), (0.9, 0.7)):
        r = fake_run(method="prune.magnitude", family="pruning", config={"sparsity": s}, accuracy=acc)
        r["metrics"]["sparsity"] = s
        r["method_metrics"] = {"sparsity": 0.99, **({"note": "sparse storage is larger than dense here"} if s == 0.5
                                                    else {})}
        runs.append(r)
    board = aggregate(runs)
    rows = {r.label: r for r in board.sections[0].real if r.batch_size == 1}
    assert rows["prune.magnitude sparsity=0.9"].sparsity == 0.9 and rows["baseline"].sparsity == 0.0
    assert rows["prune.magnitude sparsity=0.5"].note == "sparse storage is larger than dense here"
    md = to_markdown(board)
    assert "Sparsity" in md and "90.00" in md and "larger than dense" in md
    index = build_site(runs, tmp_path / "site", "t").read_text()
    assert "Accuracy vs sparsity" in index
    assert "Accuracy vs sparsity" not in build_site(runs[:1], tmp_path / "site2", "t").read_text()


def test_kd_rows_say_whether_they_beat_their_no_teacher_control():
    """A distillation row names its control; the board finds the control row of the same student and
    says plainly, per row, whether the teacher helped (and by how much, over how many seeds)."""
    from slimbench.leaderboard.rows import aggregate

    student = {"width": 0.5}
    runs = [fake_run(method="baseline", accuracy=0.92)]
    for seed in range(3):
        runs.append(fake_run(method="distill.scratch", family="distillation", config=student, seed=seed,
                             accuracy=0.88 + 0.001 * seed))
        runs.append(fake_run(method="distill.scratch", family="distillation", config={"width": 0.25}, seed=seed,
                             accuracy=0.95))  # another student: never the control of the width=0.5 rows
        for method, acc in (("distill.kd", 0.89), ("distill.dkd", 0.87)):
            r = fake_run(method=method, family="distillation", config={**student, "temperature": 4}, seed=seed,
                         accuracy=acc)
            r["method_metrics"] = {"control": {"method": "distill.scratch", "config": student}}
            runs.append(r)
        r = fake_run(method="distill.feature", family="distillation", config={**student, "feature": 1}, seed=seed,
                     accuracy=0.881 + 0.003 * (seed - 1))  # inside the seed noise of the control
        r["method_metrics"] = {"control": {"method": "distill.scratch", "config": student}}
        runs.append(r)
    rows = {(r.method, r.batch_size): r for r in aggregate(runs).sections[0].real if r.config.get("width") == 0.5}
    assert rows[("distill.kd", 1)].note == "beat the control distill.scratch width=0.5 (+0.90 pp; 3 vs 3 seeds)"
    assert rows[("distill.dkd", 64)].note.startswith("did not beat the control distill.scratch width=0.5 (-1.10 pp")
    assert rows[("distill.feature", 1)].note.startswith("within seed noise of the control")
    assert rows[("distill.scratch", 1)].note == ""
    one = aggregate([runs[0], runs[1], runs[3]]).sections[0].real  # one seed each: no CI to judge noise by
    assert next(r for r in one if r.method == "distill.kd").note.startswith("beat (no seed CI: one seed) the control")


def test_an_axis_whose_points_share_one_value_prints_each_tick_label_once():
    """Every pruned row at 50% sparsity: the x range is a sliver around 0.5, and a coarse label
    format rounds its ticks (0.48 ... 0.52) to one label, which is drawn once."""
    import re

    pts = [Point(0.5, acc, f"m{i}", f"runs/{i}.html", "pruning", "d") for i, acc in enumerate((0.8, 0.85, 0.9, 0.91))]
    svg = scatter_svg(pts, "t", "sparsity", lambda v: f"{v:.1f}")
    x_labels = re.findall(r'<text class="tick" [^>]*>([^<]*)</text>', svg)
    y_labels = re.findall(r'<text class="tick y" [^>]*>([^<]*)</text>', svg)
    assert x_labels == ["0.5"] and len(y_labels) == len(set(y_labels)) >= 2


def test_front_labels_are_placed_apart_or_left_to_the_hover_title():
    """Front points crowded together (a staircase of near-equal costs): each label drawn sits where
    no other label or front point is, by the same conservative widths the placement used; a point
    with no free spot keeps its hover title instead of a label drawn over another."""
    from slimbench.leaderboard.plots import FONT, text_width

    pts = [Point(1.0 + 0.002 * i, 0.80 + 0.001 * i, f"prune.l1 sparsity=0.{i:02d}", f"runs/{i}.html", "pruning", "d")
           for i in range(12)]
    pts += [Point(1.0, 0.80, "half", "runs/h.html", "quantization", "d"),  # on top of prune.l1 sparsity=0.00
            Point(4.0, 0.9, "baseline", "runs/b.html", "reference", "d"), Point(5.0, 0.6, "x", "runs/x.html", "", "d")]
    svg = scatter_svg(pts, "t", "size", fmt.size)
    labels = re.findall(r'<text class="pt-label" x="([\d.]+)" y="([\d.]+)" text-anchor="(\w+)">([^<]*)</text>', svg)
    assert {"half", "prune.l1 sparsity=0.00", "baseline"} <= {t for *_, t in labels} and len(labels) < 14
    boxes = []
    for x, y, anchor, text in labels:
        x, y, w = float(x), float(y), text_width(text)
        x0 = x - w if anchor == "end" else x - w / 2 if anchor == "middle" else x
        boxes.append((x0, y - FONT, x0 + w, y + 3))
    dots = [(float(cx) - 5, float(cy) - 5, float(cx) + 5, float(cy) + 5)
            for cx, cy in re.findall(r'cx="([\d.]+)" cy="([\d.]+)" r="5" data-label="[^"]*" data-href="[^"]*" '
                                     r'data-front="1"', svg)]

    def overlap(a, b):
        return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
    assert not any(overlap(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    assert not any(overlap(a, d) for a in boxes for d in dots)
    assert svg.count("<title>") == len(pts) + 1  # every point keeps its hover title (+ the plot's)


def test_trace_legend_keeps_whole_names_and_wraps():
    from slimbench.leaderboard.plots import H, trace_svg

    long = "nas.evolution max_mflops_ratio=0.5 population=16 generations=40 proxy_steps=200 · seed 0"
    svg = trace_svg({long: [(0, 0.5), (10, 0.6)], "short · seed 1": [(0, 0.4), (10, 0.7)]}, "t", "steps")
    parts = re.findall(r'<text class="legend"[^>]*data-label="([^"]*)">(.*?)</text>', svg)
    assert [name for name, _ in parts] == [long, "short · seed 1"]
    tspans = [re.findall(r"<tspan[^>]*>([^<]*)</tspan>", body) for _, body in parts]
    assert " ".join(tspans[0]) == long and len(tspans[0]) >= 2 and tspans[1] == ["short · seed 1"]
    height = int(re.search(r'height="(\d+)"', svg).group(1))
    assert height > H  # the legend sits under the plot, which grows to hold it
