"""The leaderboard in a real browser: headless Debian Chromium driven by Playwright.

Skips (with the reason) where /usr/bin/chromium or playwright is missing; CI installs both.
Saves a screenshot of the index to results/leaderboard-screenshot.png.
"""
from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path
from typing import Any, Iterator

import pytest

from slimbench.leaderboard.command import configure
from slimbench.suite.cli import cmd_leaderboard as run

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
SCREENSHOT = Path(__file__).resolve().parents[1] / "results" / "leaderboard-screenshot.png"
_STORE_PATH = Path(__file__).parent / "fixtures" / "leaderboard" / "store.py"

if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")


def _store_module() -> Any:
    spec = importlib.util.spec_from_file_location("leaderboard_fixture_store", _STORE_PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


store = _store_module()


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    uri, results = store.shared_store(tmp_path_factory)
    out = tmp_path_factory.mktemp("browser-site")
    parser = argparse.ArgumentParser()
    configure(parser)
    assert run(parser.parse_args(["--tracking-uri", uri, "--results-dir", str(results), "--out", str(out)])) == 0
    return out


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield b
        b.close()


class Watched:
    """A page plus everything that must not happen on it: errors, dialogs, blocked scripts."""

    def __init__(self, page: Any):
        self.page = page
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("dialog", self._dialog)

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def open(self, path: Path) -> Any:
        self.page.goto(path.as_uri())
        return self.page

    def assert_clean(self) -> None:
        assert self.errors == [] and self.dialogs == []
        assert self.page.evaluate("typeof window.__pwned") == "undefined"


@pytest.fixture()
def watched(browser) -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    yield Watched(context.new_page())
    context.close()


def _index(watched: Watched, site: Path) -> Any:
    page = watched.open(site / "index.html")
    page.wait_for_selector("html[data-ready='1']", timeout=10_000)
    return page


def _visible_labels(page: Any, kind: str) -> list[str]:
    return page.eval_on_selector_all(
        f"section[data-task='toy-vision'] table[data-kind='{kind}'] tbody tr",
        "rows => rows.filter(r => !r.hidden).map(r => r.cells[0].getAttribute('data-v'))")


def test_index_loads_cleanly_and_screenshot(watched: Watched, site: Path):
    page = _index(watched, site)
    assert page.title() == "slimbench leaderboard"
    assert page.locator("section.task").count() == 2
    assert page.text_content("#shown") == f"Showing {page.locator('tr[data-row]').count()} of " \
                                          f"{page.locator('tr[data-row]').count()} rows"
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    assert SCREENSHOT.stat().st_size > 10_000
    watched.assert_clean()


@pytest.fixture()
def watched_without_csp(browser) -> Iterator[Watched]:
    """The page's CSP switched off, so escaping alone must keep hostile strings inert."""
    context = browser.new_context(bypass_csp=True)
    yield Watched(context.new_page())
    context.close()


def test_hostile_name_is_text_not_code(watched_without_csp: Watched, site: Path):
    watched = watched_without_csp
    page = _index(watched, site)
    assert page.locator("img").count() == 0
    assert page.locator("script").count() == 2  # the data block and the app, nothing injected
    cell = page.locator("section[data-task='toy-vision'] table[data-kind='real'] td a", has_text="<img").first
    label = f"{store.HOSTILE} note={store.HOSTILE}"  # name plus its hostile config value
    assert cell.text_content() == label
    options = page.eval_on_selector_all("select[name='method'] option", "os => os.map(o => o.value)")
    assert store.HOSTILE in options
    page.select_option("select[name='method']", store.HOSTILE)
    assert set(_visible_labels(page, "real")) == {label}
    cell.click()
    page.wait_for_load_state()
    assert "runs/" in page.url and page.locator("h1").text_content().startswith(store.HOSTILE)
    assert page.locator("img").count() == 0 and page.locator("script").count() == 0
    watched.assert_clean()


def test_sorting(watched: Watched, site: Path):
    page = _index(watched, site)
    table = "section[data-task='toy-vision'] table[data-kind='real']"
    header = page.locator(f"{table} thead th", has_text="Accuracy % ↑")
    values = f"{table} tbody tr td:nth-child({int(header.get_attribute('data-col')) + 1})"
    header.locator("button").click()
    asc = [float(v) for v in page.eval_on_selector_all(values, "cs => cs.map(c => c.dataset.v)")]
    assert asc == sorted(asc) and asc[0] == pytest.approx(0.5)
    assert header.get_attribute("aria-sort") == "ascending"
    header.locator("button").click()
    desc = [float(v) for v in page.eval_on_selector_all(values, "cs => cs.map(c => c.dataset.v)")]
    assert desc == sorted(asc, reverse=True) and desc[0] == pytest.approx(0.91)
    page.locator(f"{table} thead th", has_text="Method").locator("button").click()
    labels = _visible_labels(page, "real")
    assert labels == sorted(labels, key=str.lower)
    watched.assert_clean()


def _visible_columns(page: Any, kind: str) -> list[str]:
    """The visible sub-column headers (bs1, bs8...) of a toy-vision table, with their groups."""
    return page.eval_on_selector_all(
        f"section[data-task='toy-vision'] table[data-kind='{kind}'] thead th[data-col-batch]:not([data-col-batch=''])",
        "ths => ths.filter(th => !th.hidden).map(th => th.dataset.group + ' ' + th.textContent)")


def test_filtering(watched: Watched, site: Path):
    page = _index(watched, site)
    everything = _visible_labels(page, "real")
    assert len(everything) == 4  # one row per configuration, whatever the batch sizes
    assert _visible_columns(page, "real") == [f"{g} bs{b}" for g in ("latency_median_ms", "speedup", "peak_bytes")
                                              for b in store.BATCHES]
    page.select_option("select[name='family']", "quantization")
    assert set(_visible_labels(page, "real")) == {"quant.minmax bits=8"}
    assert set(_visible_labels(page, "simulated")) == {"quant.fakequant bits=4"}
    assert _visible_labels(page, "failed") == ["quant.minmax bits=2"]
    assert page.locator("section[data-task='toy-text']").is_hidden()  # no quantization there
    page.select_option("select[name='batch']", "8")  # the batch filter keeps the rows, shows that batch's columns
    rows = page.locator("section[data-task='toy-vision'] table[data-kind='real'] tbody tr:not([hidden])")
    assert rows.count() == 1 and rows.first.get_attribute("data-batch") == "1 8"
    assert _visible_columns(page, "real") == ["latency_median_ms bs8", "speedup bs8", "peak_bytes bs8"]
    cells = rows.first.locator("td:not([hidden])[data-col-batch]")
    assert cells.count() == 3 and rows.first.locator("td[hidden]").count() == 3
    groups = page.eval_on_selector_all("section[data-task='toy-vision'] table[data-kind='real'] th.group",
                                       "ths => ths.map(th => th.colSpan)")
    assert groups == [1, 1, 1]
    page.select_option("select[name='family']", "")
    assert len(_visible_labels(page, "real")) == 4
    page.click("form#filters button[type='reset']")
    page.wait_for_function("n => document.querySelectorAll('tr[data-row]:not([hidden])').length === n",
                           arg=page.locator("tr[data-row]").count())
    assert _visible_labels(page, "real") == everything
    watched.assert_clean()


def test_plots_render(watched: Watched, site: Path):
    page = _index(watched, site)
    plots = page.locator("section[data-task='toy-vision'] svg.plot")
    assert plots.count() == 1 + len(store.BATCHES)
    for i in range(plots.count()):
        svg = plots.nth(i)
        box = svg.bounding_box()
        assert box and box["width"] > 100 and box["height"] > 100
        circles = svg.locator("circle")
        assert circles.count() == 4  # one mark per configuration (seeds aggregated)
        assert all(circles.nth(j).bounding_box()["width"] > 0 for j in range(4))
        front = svg.locator("circle[data-front='1']")
        assert 1 <= front.count() < 4
        titles = svg.locator("circle title").all_text_contents()
        assert any(t.startswith("quant.minmax bits=8") for t in titles)
        assert not any("fakequant" in t for t in titles)
    size_plot = plots.first
    dimmed = size_plot.locator("circle.dominated").first
    assert float(dimmed.evaluate("c => getComputedStyle(c).opacity")) < 1
    watched.assert_clean()


def test_run_pages_reachable(watched: Watched, site: Path):
    page = _index(watched, site)
    links = page.eval_on_selector_all("table.lb a[href^='runs/']", "as => as.map(a => a.getAttribute('href'))")
    assert {Path(h).name for h in links} == {p.name for p in (site / "runs").glob("*.html")}
    page.locator("section[data-task='toy-vision'] table[data-kind='real'] td a",
                 has_text="quant.minmax bits=8").first.click()
    page.wait_for_load_state()
    assert page.locator("h1").text_content().startswith("quant.minmax bits=8")
    assert "slimbench run --tasks toy-vision" in page.locator("pre code").text_content()
    page.click("text=← leaderboard")
    page.wait_for_selector("html[data-ready='1']")
    page.locator("section[data-task='toy-vision'] svg.plot circle[data-label='baseline']").first.click()
    page.wait_for_load_state()
    assert page.locator("h1").text_content().startswith("baseline")
    watched.assert_clean()


def _synthetic() -> Any:
    spec = importlib.util.spec_from_file_location("leaderboard_fixture_synthetic",
                                                  _STORE_PATH.with_name("synthetic.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


LONG = " population=16 generations=40 proxy_steps=200 mutation=0.25"


@pytest.fixture(scope="module")
def crowded(tmp_path_factory) -> Path:
    """A board the size of a default run's, on one CPU: ~37 configurations per task, close together,
    with every optional column filled (sparsity, kernels, verified, notes) and search traces whose
    names are long: what made rows run off the window and labels pile up."""
    from slimbench.leaderboard.site import build_site

    runs = [r for r in _synthetic().synthetic_runs(400) if r["device"]["type"] == "cpu"]
    for i, r in enumerate(runs):
        name, cfg = r["method"]["name"], r["method"]["config"]
        if name.startswith("prune."):
            r["metrics"]["sparsity"] = cfg.get("sparsity", cfg.get("ratio"))
            r["method_metrics"]["note"] = "sparse storage is larger than dense here"
        if name.startswith("quant."):
            r["execution_paths"] = {"cpu": {"fc1": "int8 GEMM: torch._int_mm", "fc2": "reference: dequantize + dense"}}
        if name.startswith("nas."):
            r["method"]["label"] += LONG
            r["method_metrics"]["trace"] = [{"steps": 10 * k, "best": 0.8 + 0.01 * k + 0.001 * i} for k in range(6)]
        if name == "quant.minmax":
            r["provenance"]["verification"] = {"verdict": "verified"}
    out = tmp_path_factory.mktemp("crowded-site")
    build_site(runs, out, "crowded")
    return out


def test_tables_fit_a_1440_pixel_window(browser, site: Path, crowded: Path):
    """One row per configuration, batch sizes as columns: every table, latency included, fits a
    1440-pixel-wide window without scrolling sideways."""
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    watched = Watched(context.new_page())
    try:
        for index in (site / "index.html", crowded / "index.html"):
            page = watched.open(index)
            page.wait_for_selector("html[data-ready='1']", timeout=10_000)
            assert page.evaluate("document.documentElement.scrollWidth") <= 1440
            widths = page.eval_on_selector_all("table.lb",
                                               "ts => ts.map(t => [t.scrollWidth, t.parentElement.clientWidth])")
            assert widths and all(w <= c for w, c in widths), widths
            right = page.eval_on_selector_all("table.lb th, table.lb td",
                                              "cs => Math.max(...cs.map(c => c.getBoundingClientRect().right))")
            assert right <= 1440
            assert page.locator("table[data-kind='real'] th.group", has_text="Latency").count() >= 1
        vision = page.locator("section[data-task='toy-vision'] table[data-kind='real']")
        heads = vision.locator("thead th").all_text_contents()
        assert {"Sparsity", "Kernels", "Note", "bs1", "bs64"} <= set(heads)
        assert vision.locator("td.method .badge.verified").count() >= 1  # verified: a badge by the name
        watched.assert_clean()
    finally:
        context.close()


def _overlaps(a: dict, b: dict, slack: float = 0.0) -> bool:
    return (a["left"] + slack < b["right"] and b["left"] + slack < a["right"]
            and a["top"] + slack < b["bottom"] and b["top"] + slack < a["bottom"])


def test_plot_labels_never_collide(watched: Watched, crowded: Path):
    """Front points are labelled only where the label covers no other label and no front point
    (the rest keep their hover title): measured on the rendered text, not the estimate."""
    page = _index(watched, crowded)
    rect = ("e => { const r = e.getBoundingClientRect(); "
            "return {left: r.left, right: r.right, top: r.top, bottom: r.bottom}; }")
    plots = page.locator("svg.plot:not(.trace)")
    labelled = 0
    for i in range(plots.count()):
        svg = plots.nth(i)
        labels = svg.locator("text.pt-label").evaluate_all(f"ts => ts.map({rect})")
        front = svg.locator("circle[data-front='1']").evaluate_all(f"cs => cs.map({rect})")
        box = svg.evaluate(rect)
        labelled += len(labels)
        for j, a in enumerate(labels):
            assert box["left"] <= a["left"] and a["right"] <= box["right"]
            assert not any(_overlaps(a, b) for b in labels[j + 1:]), (i, a)
            assert not any(_overlaps(a, c, slack=1.0) for c in front), (i, a)
    assert labelled >= plots.count()  # crowded, yet labelled
    watched.assert_clean()


def test_search_trace_legend_shows_whole_names(watched: Watched, crowded: Path):
    page = _index(watched, crowded)
    traces = page.locator("section[data-task='toy-vision'] svg.plot.trace")
    assert traces.count() == 1
    svg = traces.first
    box = svg.bounding_box()
    entries = svg.locator("text.legend")
    names = svg.locator("polyline.trace-line").evaluate_all("ps => ps.map(p => p.dataset.label)")
    assert entries.count() == len(names) >= 4
    rects = []
    for k in range(entries.count()):
        entry = entries.nth(k)
        parts = entry.locator("tspan").all_text_contents()
        assert " ".join(parts) == names[k] and LONG.strip() in names[k]  # nothing cut
        r = entry.bounding_box()
        assert r["x"] >= box["x"] and r["x"] + r["width"] <= box["x"] + box["width"] + 0.5
        assert r["y"] + r["height"] <= box["y"] + box["height"] + 0.5
        rects.append({"left": r["x"], "right": r["x"] + r["width"], "top": r["y"], "bottom": r["y"] + r["height"]})
    assert not any(_overlaps(a, b) for j, a in enumerate(rects) for b in rects[j + 1:])
    watched.assert_clean()
