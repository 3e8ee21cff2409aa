"""An activation histogram as inline SVG (drawn here: a few rectangles need no library)."""

from __future__ import annotations

import numpy as np

__all__ = ["histogram_svg"]


def histogram_svg(counts: np.ndarray, edges: np.ndarray, width: int = 360,
                  height: int = 140) -> dict:
    """Bars of ``counts`` (B,) over ``edges`` (B+1,) in a ``width`` x ``height`` px box.

    Returns ``{"width", "height", "bars": [{"x", "y", "w", "h", "count", "lo", "hi"}],
    "lo", "hi", "max"}`` for the template, which draws the SVG (with a tooltip per bar).
    """
    counts = np.asarray(counts, dtype=np.int64)
    edges = np.asarray(edges, dtype=np.float64)
    if len(edges) != len(counts) + 1:
        raise ValueError(f"histogram: {len(counts)} counts need {len(counts) + 1} edges, "
                         f"got {len(edges)}")
    top = max(int(counts.max()) if len(counts) else 0, 1)
    bar_w = width / max(len(counts), 1)
    bars = []
    for i, count in enumerate(counts):
        h = height * int(count) / top
        bars.append({"x": round(i * bar_w, 2), "y": round(height - h, 2),
                     "w": round(max(bar_w - 1, 0.5), 2), "h": round(h, 2), "count": int(count),
                     "lo": float(edges[i]), "hi": float(edges[i + 1])})
    return {"width": width, "height": height, "bars": bars, "max": top,
            "lo": float(edges[0]) if len(edges) else 0.0,
            "hi": float(edges[-1]) if len(edges) else 0.0}
