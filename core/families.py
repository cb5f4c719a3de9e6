"""The method families, and the colour each one has on the leaderboard.

The colour is part of a family's definition, keyed by name, so adding or reordering
families never repaints the others.
"""
from __future__ import annotations

# name -> colour (hex) of its points in the leaderboard's plots
FAMILY_COLOURS: dict[str, str] = {
    "reference": "#57606a",
    "quantization": "#1f6feb",
    "pruning": "#cf222e",
    "distillation": "#1a7f37",
    "low-rank": "#8250df",
    "nas": "#bf8700",
    "pipeline": "#0a7d8c",
}
FAMILIES: tuple[str, ...] = tuple(FAMILY_COLOURS)
UNKNOWN_COLOUR = "#6e7781"


def family_slug(family: str) -> str:
    """A CSS-safe class for a family ('low-rank' -> 'fam-low-rank'); unknown names share one class."""
    return f"fam-{family}" if family in FAMILY_COLOURS else "fam-x"
