"""Line charts as inline SVG, drawn here (no plotting dependency).

:func:`line_chart` draws series of ``(x, y)`` points on linear (or, for positive data that
spans decades, logarithmic) axes with rounded ticks, a legend and axis labels.
"""

from __future__ import annotations

import dataclasses
import html
import math

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
           "#17becf")


@dataclasses.dataclass
class Series:
  """One line: ``points`` ``[(x, y)]``; ``markers`` for sparse points (evaluations)."""

  label: str
  points: list[tuple[float, float]]
  color: str | None = None
  dashed: bool = False
  markers: bool = False


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
  """About ``count`` round values (1, 2 or 5 times a power of ten apart) in ``[lo, hi]``."""
  if not (math.isfinite(lo) and math.isfinite(hi)):
    return []
  if hi <= lo:
    return [lo]
  raw = (hi - lo) / max(count, 1)
  mag = 10.0 ** math.floor(math.log10(raw))
  step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
  first = math.ceil(lo / step - 1e-9) * step
  return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _fmt(v: float) -> str:
  if v == 0:
    return "0"
  if abs(v) >= 1e4 or abs(v) < 1e-3:
    return f"{v:.0e}"
  return f"{v:.4g}"


def line_chart(series: list[Series], title: str, xlabel: str, ylabel: str,
               width: int = 560, height: int = 300, log_y: bool | None = None) -> str:
  """An ``<svg>`` element of ``series``; ``log_y=None``: logarithmic when every y is
  positive and they span more than a factor of 20. Non-finite points are dropped."""
  series = [dataclasses.replace(s, points=[(float(x), float(y)) for x, y in s.points
                                           if math.isfinite(x) and math.isfinite(y)])
            for s in series]
  series = [s for s in series if s.points]
  esc = html.escape
  head = (f'<svg class="chart" width="{width}" height="{height}" '
          f'viewBox="0 0 {width} {height}" role="img" aria-label="{esc(title)}">'
          f'<title>{esc(title)}</title>')
  if not series:
    return (head + f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" '
            f'fill="#888">{esc(title)}: no data</text></svg>')
  xs = [x for s in series for x, _ in s.points]
  ys = [y for s in series for _, y in s.points]
  if log_y is None:
    log_y = min(ys) > 0 and max(ys) / min(ys) > 20
  ty = (lambda y: math.log10(y)) if log_y else (lambda y: y)
  x0, x1 = min(xs), max(xs)
  y0, y1 = min(map(ty, ys)), max(map(ty, ys))
  if x1 == x0:
    x0, x1 = x0 - 1, x1 + 1
  pad = (y1 - y0) * 0.06 or max(abs(y0) * 0.05, 0.5)
  y0, y1 = y0 - pad, y1 + pad
  # Legend: one row of entries under the title, wrapped at the plot's width.
  left, right, bottom = 62, 14, 42
  legend, lx, ly = [], left, 34
  for i, s in enumerate(series):
    w = 34 + 6.5 * len(s.label)
    if lx > left and lx + w > width - right:
      lx, ly = left, ly + 15
    legend.append((lx, ly))
    lx += w
  top = ly + 10
  pw, ph = width - left - right, height - top - bottom
  px = lambda x: left + (x - x0) / (x1 - x0) * pw
  py = lambda y: top + (1 - (ty(y) - y0) / (y1 - y0)) * ph
  out = [head, f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fff" '
               'stroke="#999"/>',
         f'<text x="{left + pw / 2}" y="16" text-anchor="middle" font-weight="bold">'
         f'{esc(title)}</text>']
  for x in nice_ticks(x0, x1):
    out.append(f'<line x1="{px(x):.1f}" x2="{px(x):.1f}" y1="{top}" y2="{top + ph}" '
               f'stroke="#eee"/><text x="{px(x):.1f}" y="{top + ph + 14}" '
               f'text-anchor="middle" font-size="11">{_fmt(x)}</text>')
  if log_y:
    yticks = [10.0 ** e for e in range(math.floor(y0), math.ceil(y1) + 1)
              if y0 <= e <= y1] or [10.0 ** ((y0 + y1) / 2)]
  else:
    yticks = nice_ticks(y0, y1)
  for y in yticks:
    out.append(f'<line x1="{left}" x2="{left + pw}" y1="{py(y):.1f}" y2="{py(y):.1f}" '
               f'stroke="#eee"/><text x="{left - 5}" y="{py(y) + 4:.1f}" text-anchor="end" '
               f'font-size="11">{_fmt(y)}</text>')
  out.append(f'<text x="{left + pw / 2}" y="{height - 6}" text-anchor="middle" '
             f'font-size="12">{esc(xlabel)}</text>')
  out.append(f'<text transform="translate(14 {top + ph / 2}) rotate(-90)" '
             f'text-anchor="middle" font-size="12">{esc(ylabel)}'
             f'{" (log)" if log_y else ""}</text>')
  for i, s in enumerate(series):
    color = s.color or PALETTE[i % len(PALETTE)]
    pts = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in s.points)
    dash = ' stroke-dasharray="5 4"' if s.dashed else ""
    out.append(f'<polyline class="series" fill="none" stroke="{color}" stroke-width="1.6"'
               f'{dash} points="{pts}"><title>{esc(s.label)}</title></polyline>')
    if s.markers or len(s.points) == 1:
      out += [f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="2.8" fill="{color}"/>'
              for x, y in s.points]
    lx, ly = legend[i]
    out.append(f'<line x1="{lx}" x2="{lx + 22}" y1="{ly}" y2="{ly}" stroke="{color}" '
               f'stroke-width="2"{dash}/><text x="{lx + 27}" y="{ly + 4}" '
               f'font-size="11">{esc(s.label)}</text>')
  out.append("</svg>")
  return "".join(out)
