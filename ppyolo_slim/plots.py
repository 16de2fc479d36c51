"""Small matplotlib helpers the project's plots share: a log axis people can read, and point
labels that neither overlap each other nor leave the axes."""
from __future__ import annotations

import math
from typing import Any, Optional, Sequence, Tuple


def readable_log_axis(ax, values: Sequence[float], axis: str = "x") -> None:
    """Log scale with plain-decimal ticks at 1, 2, 5 x 10^k over the data's span. Matplotlib's
    default labels every minor tick of a short span as 3x10^-2, 4x10^-2, ... and they run together."""
    import matplotlib.ticker as mt
    vals = [float(v) for v in values if v and v > 0 and math.isfinite(v)]
    getattr(ax, f"set_{axis}scale")("log")
    if not vals:
        return
    lo, hi = min(vals), max(vals)
    lo_lim, hi_lim = lo / 1.5, hi * 1.5            # room for the points' labels at both ends
    getattr(ax, f"set_{axis}lim")(lo_lim, hi_lim)
    ticks = [m * 10.0 ** e for e in range(math.floor(math.log10(lo_lim)) - 1, math.ceil(math.log10(hi_lim)) + 1)
             for m in (1, 2, 5) if lo_lim <= m * 10.0 ** e <= hi_lim]
    if len(ticks) < 2:                             # a span under 2.5x: the ends themselves
        ticks = [lo, hi] if lo != hi else [lo]
    a = getattr(ax, f"{axis}axis")
    a.set_major_locator(mt.FixedLocator(ticks))
    a.set_major_formatter(mt.FuncFormatter(lambda v, _: f"{v:.3g}"))
    a.set_minor_formatter(mt.NullFormatter())


# offsets (points) tried in turn for each label: above right, below right, above left, ...
_OFFSETS: Tuple[Tuple[int, int], ...] = ((6, 5), (6, -12), (-6, 5), (-6, -12), (6, 16), (-6, 16),
                                         (6, -23), (-6, -23), (6, 27), (-6, 27), (6, -34), (-6, -34))


def place_labels(ax, xs: Sequence[float], ys: Sequence[float], texts: Sequence[str],
                 colors: Optional[Sequence[Any]] = None, **kw) -> list:
    """Annotate each point with its text at the first offset whose box overlaps no label placed
    before and is no nearer another point than its own, and stays inside the axes (else the least bad); ``colors``: one per label, the
    point's, so close points keep their labels apart. Returns the annotations."""
    fig = ax.figure
    fig.canvas.draw()                  # fixes the layout, so extents are final
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    # a label nearer another point than its own (or on its marker) would name the wrong point
    pts = ax.transData.transform(list(zip(xs, ys)))
    placed, out = [], []
    for i, (x, y, t) in enumerate(zip(xs, ys, texts)):
        best = None
        if colors is not None:
            kw["color"] = colors[i]
        for dx, dy in _OFFSETS:
            a = ax.annotate(t, (x, y), textcoords="offset points", xytext=(dx, dy),
                            ha="left" if dx > 0 else "right", **kw)
            box = a.get_window_extent(renderer).padded(1)
            bad = (sum(box.overlaps(b) for b in placed) * 10 + (not _inside(box, frame))
                   + _nearer_another(box, pts, i) * 10)
            if best is None or bad < best[0]:
                if best is not None:
                    best[1].remove()
                best = (bad, a, box)
            else:
                a.remove()
            if bad == 0:
                break
        placed.append(best[2])
        out.append(best[1])
    return out


def _nearer_another(box, pts, i: int) -> bool:
    """Whether the point nearest to the label's closest edge is not the label's own."""
    def gap(p):
        dx = max(box.x0 - p[0], 0.0, p[0] - box.x1)
        dy = max(box.y0 - p[1], 0.0, p[1] - box.y1)
        return dx * dx + dy * dy
    own = gap(pts[i])
    return any(gap(p) < own for j, p in enumerate(pts) if j != i)


def _inside(box, frame) -> bool:
    return box.x0 >= frame.x0 and box.x1 <= frame.x1 and box.y0 >= frame.y0 and box.y1 <= frame.y1
