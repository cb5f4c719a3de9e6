"""Server-side SVG scatter plots with the Pareto front highlighted.

Rendered at build time so the site needs no plotting library and works without
JavaScript; every string from a run is escaped. One `<circle>` per point, carrying the
run's label in `data-label` and a `<title>` (the browser's hover tooltip), wrapped in a
link to the run's page. Front points are labelled; dominated points are dimmed by CSS.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape
from typing import Callable

from slimbench.core.families import FAMILY_COLOURS, UNKNOWN_COLOUR, family_slug
from slimbench.leaderboard.stats import pareto_front

W, H = 460, 300
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 28, 42


@dataclass(frozen=True)
class Point:
    """One configuration: accuracy (maximized) against a cost (minimized)."""

    cost: float
    accuracy: float
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
    return "\n".join([*rules, f"circle.fam-x {{ fill: {UNKNOWN_COLOUR}; }}"])


def _axes(sx: Callable[[float], float], sy: Callable[[float], float], x_ticks: list[float],
          y_ticks: list[float], right: float, fmt_x: Callable[[float], str], x_label: str, y_label: str) -> str:
    """Axes, grid, ticks (y as a percentage of [0, 1]) and labels of a plot spanning LEFT..right."""
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
        y, text = sy(t), f"{100 * t:.3g}"
        if text not in shown:
            shown.add(text)
            out.append(f'<line class="grid" x1="{LEFT}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}"/>'
                       f'<text class="tick y" x="{LEFT - 4}" y="{y + 3:.1f}">{text}</text>')
    out.append(f'<text class="axis-label" x="{(LEFT + right) / 2}" y="{H - 6}">{escape(x_label)}</text>'
               f'<text class="axis-label y" x="12" y="{(TOP + H - BOTTOM) / 2}" '
               f'transform="rotate(-90 12 {(TOP + H - BOTTOM) / 2})">{escape(y_label)}</text></g>')
    return "".join(out)


def scatter_svg(points: list[Point], title: str, x_label: str, fmt_x: Callable[[float], str],
                ) -> str:
    """An SVG scatter of accuracy (y, %) against cost (x), Pareto front highlighted."""
    pts = [p for p in points if math.isfinite(p.cost) and math.isfinite(p.accuracy)]
    head = (f'<svg class="plot" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" '
            f'data-points="{len(pts)}"><title>{escape(title)}</title>'
            f'<text class="plot-title" x="{LEFT}" y="16">{escape(title)}</text>')
    if not pts:
        return head + f'<text class="empty" x="{W / 2}" y="{H / 2}">no data</text></svg>'
    xs, ys = [p.cost for p in pts], [p.accuracy for p in pts]
    log = min(xs) > 0 and max(xs) / min(xs) > 20
    x0, x1 = _padded(min(xs), max(xs), log)
    y0, y1 = _padded(min(ys), max(ys), False)
    sx = _scale(x0, x1, LEFT, W - RIGHT, log)
    sy = _scale(y0, y1, H - BOTTOM, TOP, False)
    out = [head, _axes(sx, sy, _log_ticks(x0, x1) if log else _nice_ticks(x0, x1), _nice_ticks(y0, y1), W - RIGHT,
                       fmt_x, f"{x_label} (lower is better)", "accuracy % (higher is better)")]
    front = pareto_front([(p.accuracy, p.cost) for p in pts])
    steps = sorted((p.cost, p.accuracy) for p, f in zip(pts, front) if f)
    path = " ".join(f"{sx(c):.1f},{sy(a):.1f}" for c, a in steps)
    out.append(f'<polyline class="front-line" points="{path}"/>')
    labels: list[str] = []
    boxes: list[tuple[float, float, float, float]] = []
    for p, on in zip(pts, front):
        cx, cy = sx(p.cost), sy(p.accuracy)
        cls = f'pt {"front" if on else "dominated"} {family_slug(p.family)}'
        out.append(f'<a href="{escape(p.href)}"><circle class="{cls}" cx="{cx:.1f}" cy="{cy:.1f}" r="5" '
                   f'data-label="{escape(p.label)}" data-href="{escape(p.href)}" data-front="{int(on)}">'
                   f'<title>{escape(p.label)}: {escape(p.detail)}{"" if on else " (dominated)"}</title>'
                   f'</circle></a>')
        if on:
            labels.append(_label(p.label, cx, cy, boxes))
    return "".join(out + labels) + "</svg>"


def _label(text: str, cx: float, cy: float, boxes: list[tuple[float, float, float, float]]) -> str:
    """A front point's label, nudged off labels already placed (dropped if no room: hover still names it)."""
    short = text if len(text) <= 28 else text[:27] + "…"
    width = 5.6 * len(short)
    end = cx + 8 + width > W - 2
    x = cx - 8 if end else cx + 8
    x0, x1 = (x - width, x) if end else (x, x + width)
    for dy in (-6, 12, -17, 23, -28):
        y = cy + dy
        box = (x0, y - 9, x1, y + 2)
        if box[1] >= 0 and box[3] <= H and not any(
                box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in boxes):
            boxes.append(box)
            anchor = "end" if end else "start"
            return f'<text class="pt-label" x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}">{escape(short)}</text>'
    return ""


SERIES_COLOURS = ("#bf8700", "#1f6feb", "#cf222e", "#1a7f37", "#8250df", "#57606a", "#d4a72c", "#0a3069")


def trace_svg(series: dict[str, list[tuple[float, float]]], title: str, x_label: str,
              y_label: str = "best validation accuracy %") -> str:
    """An SVG step plot of best-so-far curves (y in [0, 1], shown in %), one line per series:
    a search's trace (best-so-far score against the budget spent)."""
    data = {k: sorted(v) for k, v in series.items() if v}
    head = (f'<svg class="plot trace" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" '
            f'data-series="{len(data)}"><title>{escape(title)}</title>'
            f'<text class="plot-title" x="{LEFT}" y="16">{escape(title)}</text>')
    pts = [p for v in data.values() for p in v if math.isfinite(p[0]) and math.isfinite(p[1])]
    if not pts:
        return head + f'<text class="empty" x="{W / 2}" y="{H / 2}">no data</text></svg>'
    x0, x1 = _padded(min(p[0] for p in pts), max(p[0] for p in pts), False)
    y0, y1 = _padded(min(p[1] for p in pts), max(p[1] for p in pts), False)
    sx, sy = _scale(x0, x1, LEFT, W - RIGHT - 110, False), _scale(y0, y1, H - BOTTOM, TOP, False)
    right = W - RIGHT - 110  # room for the legend
    out = [head, _axes(sx, sy, _nice_ticks(x0, x1), _nice_ticks(y0, y1), right, lambda t: f"{t:g}", x_label, y_label)]
    for i, (name, line) in enumerate(data.items()):
        colour = SERIES_COLOURS[i % len(SERIES_COLOURS)]
        steps: list[str] = []
        for j, (x, y) in enumerate(line):
            if j:
                steps.append(f"{sx(x):.1f},{sy(line[j - 1][1]):.1f}")
            steps.append(f"{sx(x):.1f},{sy(y):.1f}")
        out.append(f'<polyline class="trace-line" fill="none" stroke="{colour}" stroke-width="2" '
                   f'points="{" ".join(steps)}" data-label="{escape(name)}"><title>{escape(name)}</title></polyline>')
        short = name if len(name) <= 18 else name[:17] + "…"
        out.append(f'<text class="legend" x="{W - RIGHT - 104}" y="{TOP + 10 + 14 * i}" fill="{colour}">'
                   f'{escape(short)}</text>')
    return "".join(out) + "</svg>"
