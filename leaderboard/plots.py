"""Server-side SVG scatter plots with the Pareto front highlighted.

Rendered at build time so the site needs no plotting library and works without
JavaScript; every string from a run is escaped. One `<circle>` per point, carrying the
run's label in `data-label` and a `<title>` (the browser's hover tooltip), wrapped in a
link to the run's page. The y axis is the task's metric (`core.metrics`), drawn so that better is
up whatever its direction (perplexity's axis runs downwards, and says so). Front points are
labelled where a label fits without covering another label or point (placed greedily from
conservative text widths: the page has no layout engine at build time); the rest keep their
hover title. Dominated points are dimmed by CSS.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape
from typing import Callable

from slimbench.core.families import FAMILY_COLOURS, UNKNOWN_COLOUR, family_slug
from slimbench.core.metrics import Metric, get_metric
from slimbench.leaderboard.stats import pareto_front

W, H = 450, 300  # three plots side by side in a 1440-px window
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 28, 42


@dataclass(frozen=True)
class Point:
    """One configuration: its quality (the task metric's value) against a cost (minimized)."""

    cost: float
    quality: float
    label: str
    href: str
    family: str
    detail: str  # hover text after the label, e.g. "91.2%, 1.2 MB"


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step) * step
    return [start + i * step for i in range(int((hi - start) / step + 1e-9) + 1)]


def _log_ticks(lo: float, hi: float) -> list[float]:
    ticks = []
    for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        ticks += [m * 10 ** e for m in ((1, 2, 5) if hi / lo < 1000 else (1,))]
    return [t for t in ticks if lo <= t <= hi] or [lo]


def _scale(lo: float, hi: float, a: float, b: float, log: bool) -> Callable[[float], float]:
    if log:
        lo, hi = math.log10(lo), math.log10(hi)
    span = (hi - lo) or 1.0

    def f(v: float) -> float:
        v = math.log10(v) if log else v
        return a + (v - lo) / span * (b - a)
    return f


def _padded(lo: float, hi: float, log: bool) -> tuple[float, float]:
    if log:
        return lo / 1.25, hi * 1.25
    pad = (hi - lo) * 0.08 or abs(hi) * 0.05 or 1.0
    return lo - pad, hi + pad


def family_css() -> str:
    """One fill rule per family, from its colour in `core.families` (keyed by name, not position)."""
    rules = [f"circle.{family_slug(f)} {{ fill: {c}; }}" for f, c in FAMILY_COLOURS.items()]
    dots = [f"span.dot.{family_slug(f)} {{ background: {c}; }}" for f, c in FAMILY_COLOURS.items()]
    return "\n".join([*rules, f"circle.fam-x {{ fill: {UNKNOWN_COLOUR}; }}", *dots,
                      f"span.dot.fam-x {{ background: {UNKNOWN_COLOUR}; }}"])


def _axes(sx: Callable[[float], float], sy: Callable[[float], float], x_ticks: list[float],
          y_ticks: list[float], right: float, fmt_x: Callable[[float], str], x_label: str, y_label: str,
          fmt_y: Callable[[float], str] = lambda t: f"{100 * t:.3g}") -> str:
    """Axes, grid, ticks (y by default as a percentage of [0, 1]) and labels of a plot spanning LEFT..right."""
    out = [f'<g class="axes"><line x1="{LEFT}" y1="{H - BOTTOM}" x2="{right}" y2="{H - BOTTOM}"/>'
           f'<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{H - BOTTOM}"/>']
    shown: set[str] = set()  # a narrow range (every point at one value) rounds several ticks to one label
    for t in x_ticks:
        x, text = sx(t), fmt_x(t)
        if text not in shown:
            shown.add(text)
            out.append(f'<line class="grid" x1="{x:.1f}" y1="{TOP}" x2="{x:.1f}" y2="{H - BOTTOM}"/>'
                       f'<text class="tick" x="{x:.1f}" y="{H - BOTTOM + 14}">{escape(text)}</text>')
    shown.clear()
    for t in y_ticks:
        y, text = sy(t), fmt_y(t)
        if text not in shown:
            shown.add(text)
            out.append(f'<line class="grid" x1="{LEFT}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}"/>'
                       f'<text class="tick y" x="{LEFT - 4}" y="{y + 3:.1f}">{escape(text)}</text>')
    out.append(f'<text class="axis-label" x="{(LEFT + right) / 2}" y="{H - 6}">{escape(x_label)}</text>'
               f'<text class="axis-label y" x="12" y="{(TOP + H - BOTTOM) / 2}" '
               f'transform="rotate(-90 12 {(TOP + H - BOTTOM) / 2})">{escape(y_label)}</text></g>')
    return "".join(out)


def y_axis(metric: Metric) -> tuple[str, Callable[[float], str]]:
    """The y-axis label and tick format of `metric`: better is always up, and the label says so."""
    if metric.percent:
        fmt_y = (lambda t: f"{100 * t:.3g}")
    else:
        fmt_y = (lambda t: f"{t:.3g}")
    unit = " %" if metric.percent else ""
    way = "higher is better" if metric.higher_is_better else "lower is better, drawn up"
    return f"{metric.label}{unit} ({way})", fmt_y


def scatter_svg(points: list[Point], title: str, x_label: str, fmt_x: Callable[[float], str],
                metric: Metric | None = None) -> str:
    """An SVG scatter of the task metric (y, better up) against cost (x), Pareto front highlighted:
    the front is `core.pareto`'s on (`metric.score`, cost), so lower perplexity counts as better."""
    metric = metric or get_metric("accuracy")
    pts = [p for p in points if math.isfinite(p.cost) and math.isfinite(p.quality)]
    head = (f'<svg class="plot" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" '
            f'data-points="{len(pts)}"><title>{escape(title)}</title>'
            f'<text class="plot-title" x="{LEFT}" y="16">{escape(title)}</text>')
    if not pts:
        return head + f'<text class="empty" x="{W / 2}" y="{H / 2}">no data</text></svg>'
    xs, ys = [p.cost for p in pts], [p.quality for p in pts]
    log = min(xs) > 0 and max(xs) / min(xs) > 20
    x0, x1 = _padded(min(xs), max(xs), log)
    y0, y1 = _padded(min(ys), max(ys), False)
    sx = _scale(x0, x1, LEFT, W - RIGHT, log)
    # better up: the highest value at the top for accuracy, the lowest for perplexity
    sy = _scale(y0, y1, H - BOTTOM, TOP, False) if metric.higher_is_better else _scale(y0, y1, TOP, H - BOTTOM, False)
    y_label, fmt_y = y_axis(metric)
    out = [head, _axes(sx, sy, _log_ticks(x0, x1) if log else _nice_ticks(x0, x1), _nice_ticks(y0, y1), W - RIGHT,
                       fmt_x, f"{x_label} (lower is better)", y_label, fmt_y)]
    front = pareto_front([(metric.score(p.quality), p.cost) for p in pts])
    steps = sorted(((p.cost, p.quality) for p, f in zip(pts, front) if f), key=lambda cq: (cq[0], -metric.score(cq[1])))
    path = " ".join(f"{sx(c):.1f},{sy(q):.1f}" for c, q in steps)
    out.append(f'<polyline class="front-line" points="{path}"/>')
    centres = [(sx(p.cost), sy(p.quality)) for p in pts]
    # labels never cover a label or a front point, and cover a (dimmed) dominated point only if no other spot is free
    boxes: list[Box] = [(x - R - 1, y - R - 1, x + R + 1, y + R + 1) for (x, y), on in zip(centres, front) if on]
    soft: list[Box] = [(x - R - 1, y - R - 1, x + R + 1, y + R + 1) for (x, y), on in zip(centres, front) if not on]
    labels: list[str] = []
    for p, on, (cx, cy) in zip(pts, front, centres):
        cls = f'pt {"front" if on else "dominated"} {family_slug(p.family)}'
        out.append(f'<a href="{escape(p.href)}"><circle class="{cls}" cx="{cx:.1f}" cy="{cy:.1f}" r="{R}" '
                   f'data-label="{escape(p.label)}" data-href="{escape(p.href)}" data-front="{int(on)}">'
                   f'<title>{escape(p.label)}: {escape(p.detail)}{"" if on else " (dominated)"}</title>'
                   f'</circle></a>')
    order = sorted((i for i, on in enumerate(front) if on), key=lambda i: (pts[i].cost, -metric.score(pts[i].quality)))
    for i in order:
        labels.append(_label(pts[i].label, *centres[i], boxes, soft))
    return "".join(out + labels) + "</svg>"


R = 5  # point radius
Box = tuple[float, float, float, float]  # x0, y0, x1, y1
FONT = 10  # px, svg.plot text.pt-label in style.css
# Advance widths in em, on the wide side of common sans fonts (DejaVu Sans, what headless Chromium
# falls back to, is among the widest): an estimate too small would let labels collide.
_NARROW, _SEMI, _WIDE = set("iljI.,:;'|!` "), set("tfr()[]{}/\\-\""), set("mwMW@%=+~<>")


def text_width(text: str, size: float = FONT) -> float:
    """A conservative estimate of `text`'s rendered width in px."""
    em = sum(0.34 if c in _NARROW else 0.44 if c in _SEMI else 1.0 if c in _WIDE
             else 0.8 if c.isupper() else 0.66 for c in text)
    return em * size + 2


def _overlaps(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _label(text: str, cx: float, cy: float, boxes: list[Box], soft: list[Box]) -> str:
    """A front point's label at the first spot (right, left, above, below, then further out) that
    stays in the plot and covers none of `boxes` (labels placed so far, front points), preferring
    one that covers none of `soft` (dominated points) either; none if no spot is free (the point's
    hover title still names it)."""
    short = text if len(text) <= 36 else text[:22] + "…" + text[-13:]  # keep the tail: the values tell points apart
    w = text_width(short)
    spots = []
    for dy in (4, -5, 13, -14, 22):  # baseline offsets: beside the point, then up and down
        spots += [(cx + R + 3, cy + dy, "start"), (cx - R - 3, cy + dy, "end")]
    spots += [(cx, cy - R - 5, "middle"), (cx, cy + R + 13, "middle"), (cx, cy - R - 17, "middle"),
              (cx, cy + R + 25, "middle")]
    for avoid in (boxes + soft, boxes):
        for x, y, anchor in spots:
            x0 = x - w if anchor == "end" else x - w / 2 if anchor == "middle" else x
            box = (x0, y - FONT, x0 + w, y + 3)
            if box[0] < LEFT + 1 or box[2] > W - 2 or box[1] < 20 or box[3] > H - BOTTOM - 1:
                continue
            if not any(_overlaps(box, b) for b in avoid):
                boxes.append(box)
                return (f'<text class="pt-label" x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}">'
                        f"{escape(short)}</text>")
    return ""


SERIES_COLOURS = ("#bf8700", "#1f6feb", "#cf222e", "#1a7f37", "#8250df", "#57606a", "#d4a72c", "#0a3069")


def _wrap(text: str, width: float) -> list[str]:
    """`text` in lines of at most `width` px (by `text_width`), broken at spaces where it can be."""
    out: list[str] = []
    line = ""
    for word in text.split(" "):
        cand = f"{line} {word}" if line else word
        if text_width(cand) <= width or not line:
            line = cand
        else:
            out.append(line)
            line = word
        while text_width(line) > width and len(line) > 1:  # one word wider than the plot: break it
            cut = max(k for k in range(1, len(line) + 1) if text_width(line[:k]) <= width or k == 1)
            out.append(line[:cut])
            line = line[cut:]
    return out + ([line] if line else [])


def trace_svg(series: dict[str, list[tuple[float, float]]], title: str, x_label: str,
              y_label: str = "best validation accuracy %", fmt_y: Callable[[float], str] = lambda t: f"{100 * t:.3g}",
              ) -> str:
    """An SVG step plot of best-so-far curves (y by default in [0, 1], shown in %), one line per
    series: a search's trace (best-so-far score against the budget spent). The legend sits under
    the plot, one entry per series with its whole name, wrapped, so no name is cut."""
    data = {k: sorted(v) for k, v in series.items() if v}
    right = W - RIGHT
    legend: list[tuple[int, list[str]]] = [(i, _wrap(name, right - LEFT - 22)) for i, name in enumerate(data)]
    height = H + 12 + LEGEND_LINE * sum(len(lines) for _, lines in legend) + LEGEND_GAP * len(legend) if legend else H
    head = (f'<svg class="plot trace" viewBox="0 0 {W} {height}" width="{W}" height="{height}" role="img" '
            f'data-series="{len(data)}"><title>{escape(title)}</title>'
            f'<text class="plot-title" x="{LEFT}" y="16">{escape(title)}</text>')
    pts = [p for v in data.values() for p in v if math.isfinite(p[0]) and math.isfinite(p[1])]
    if not pts:
        return head + f'<text class="empty" x="{W / 2}" y="{H / 2}">no data</text></svg>'
    x0, x1 = _padded(min(p[0] for p in pts), max(p[0] for p in pts), False)
    y0, y1 = _padded(min(p[1] for p in pts), max(p[1] for p in pts), False)
    sx, sy = _scale(x0, x1, LEFT, right, False), _scale(y0, y1, H - BOTTOM, TOP, False)
    out = [head, _axes(sx, sy, _nice_ticks(x0, x1), _nice_ticks(y0, y1), right, lambda t: f"{t:g}", x_label, y_label,
                       fmt_y)]
    y = H + 8
    for (i, (name, line)), (_, rows) in zip(enumerate(data.items()), legend):
        colour = SERIES_COLOURS[i % len(SERIES_COLOURS)]
        steps: list[str] = []
        for j, (x, v) in enumerate(line):
            if j:
                steps.append(f"{sx(x):.1f},{sy(line[j - 1][1]):.1f}")
            steps.append(f"{sx(x):.1f},{sy(v):.1f}")
        out.append(f'<polyline class="trace-line" fill="none" stroke="{colour}" stroke-width="2" '
                   f'points="{" ".join(steps)}" data-label="{escape(name)}"><title>{escape(name)}</title></polyline>')
        out.append(f'<line class="legend-key" x1="{LEFT}" y1="{y + 6}" x2="{LEFT + 16}" y2="{y + 6}" '
                   f'stroke="{colour}" stroke-width="3"/><text class="legend" x="{LEFT + 22}" y="{y + 10}" '
                   f'fill="{colour}" data-label="{escape(name)}">'
                   + "".join(f'<tspan x="{LEFT + 22}" dy="{0 if k == 0 else LEGEND_LINE}">{escape(part)}</tspan>'
                             for k, part in enumerate(rows)) + "</text>")
        y += LEGEND_LINE * len(rows) + LEGEND_GAP
    return "".join(out) + "</svg>"


LEGEND_LINE, LEGEND_GAP = 14, 3  # px per legend line, and between entries
