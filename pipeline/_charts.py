"""Charts for the HTML report, as inline SVG strings written by hand.

Every chart has a title, axis labels and units, and an aria-label with its title. Text stays text
(small, selectable, read by a screen reader); every label that comes from data goes through
`_xml_text`, so a cluster named `<script>` or `$HOME` is shown, never run or parsed. The
utilization heatmap's cells are one small PNG inside its SVG, which keeps a 1,000-cluster
report a few MB.

Why not matplotlib (what these charts were drawn with first): it took 0.1-0.3 s per chart and
0.13 s per heatmap (axes, ticks and a colour bar built and laid out for every figure) plus 0.4 s
to import, most of a report's time; these take about a millisecond each.
"""

from __future__ import annotations

import base64
import math
import struct
import zlib
from collections.abc import Sequence
from datetime import date, datetime, timedelta

import numpy as np
from markupsafe import Markup

SPEND_COLOR = "#2f6db5"
IDLE_COLOR = "#d9822b"
ACTUAL_COLOR = "#2f6db5"
PROJECTED_COLOR = "#8a8f98"
LABEL_MAX_CHARS = 28
INK = "#262626"
GRID = "#e3e6ea"

# Busy is dark blue, idle is pale: the eye goes to where GPUs work; missing data is grey.
_HEAT_STOPS = np.array(
    [[0xFB, 0xF3, 0xE4], [0xF2, 0xC5, 0x7C], [0x5B, 0x9B, 0xD5], [0x1F, 0x3F, 0x73]], dtype=float
)
_HEAT_BAD = np.array([0xD9, 0xD9, 0xD9], dtype=np.uint8)

_WIDTH = 800
_CHAR_W = 7.0  # about the width of a character at 12 px


def short_label(text: str | None, limit: int = LABEL_MAX_CHARS) -> str:
    """A chart label: one line, at most `limit` characters (an ellipsis marks a cut)."""
    one_line = " ".join(str(text or "").split())
    return one_line if len(one_line) <= limit else one_line[: limit - 1] + "…"


def _xml_text(text: str) -> str:
    return (
        str(text)
        .replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
    )


def _open_svg(title: str, height: float) -> list[str]:
    e = _xml_text(title)
    return [
        f'<svg class="chart" role="img" aria-label="{e}" width="{_WIDTH}" height="{height:.0f}" '
        f'viewBox="0 0 {_WIDTH} {height:.0f}" xmlns="http://www.w3.org/2000/svg" '
        f'font-family="DejaVu Sans, sans-serif" font-size="12" fill="{INK}">',
        f'<rect width="{_WIDTH}" height="{height:.0f}" fill="#ffffff"/>',
    ]


def _close_svg(parts: list[str]) -> Markup:
    parts.append("</svg>")
    # Safe to inline: every text from data went through _xml_text.
    return Markup("".join(parts))  # noqa: S704


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high]: steps of 1, 2, 2.5 or 5 times a power of ten."""
    if not math.isfinite(low) or not math.isfinite(high):
        low, high = 0.0, 1.0
    if high <= low:
        high = low + (abs(low) or 1.0)
    raw = (high - low) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.floor(low / step + 1e-9) * step
    ticks = []
    value = first
    while value < high + step * 0.999:
        ticks.append(round(value, 10))
        value += step
    return ticks


def _money_label(value: float, symbol: str, step: float) -> str:
    places = 0 if step >= 1 else min(4, -math.floor(math.log10(step)))
    return f"{'-' if value < 0 else ''}{symbol}{abs(value):,.{places}f}"


class _Frame:
    """A plot area inside an SVG: data -> pixel scales, axes, grid and labels."""

    def __init__(self, left: float, top: float, right: float, bottom: float) -> None:
        self.left, self.top, self.right, self.bottom = left, top, right, bottom
        self.x_lo, self.x_hi, self.y_lo, self.y_hi = 0.0, 1.0, 0.0, 1.0

    def x(self, value: float) -> float:
        span = (self.x_hi - self.x_lo) or 1.0
        return self.left + (value - self.x_lo) / span * (self.right - self.left)

    def y(self, value: float) -> float:
        span = (self.y_hi - self.y_lo) or 1.0
        return self.bottom - (value - self.y_lo) / span * (self.bottom - self.top)

    def money_y_axis(self, parts: list[str], values: Sequence[float], symbol: str) -> None:
        """A y axis from 0 with round money ticks and horizontal grid lines."""
        top = max([v for v in values if math.isfinite(v)] or [0.0])
        ticks = nice_ticks(0.0, top if top > 0 else 1.0)
        self.y_lo, self.y_hi = 0.0, ticks[-1]
        step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
        for t in ticks:
            y = self.y(t)
            parts.append(
                f'<line x1="{self.left}" y1="{y:.1f}" x2="{self.right}" y2="{y:.1f}" '
                f'stroke="{GRID}" stroke-width="0.8"/><text x="{self.left - 6}" y="{y:.1f}" '
                f'text-anchor="end" dominant-baseline="central">'
                f"{_xml_text(_money_label(t, symbol, step))}</text>"
            )

    def day_x_axis(self, parts: list[str], days: Sequence[date]) -> None:
        """Day ticks (at most ten, `%d %b`); one or two days get a day of air on each side."""
        first, last = min(days), max(days)
        pad = 1.0 if (last - first).days < 2 else 0.5
        self.x_lo = first.toordinal() - pad
        self.x_hi = last.toordinal() + pad
        span = (last - first).days + 1
        step = max(1, math.ceil(span / 9))
        day = first
        while day <= last:
            x = self.x(day.toordinal())
            parts.append(
                f'<line x1="{x:.1f}" y1="{self.bottom}" x2="{x:.1f}" y2="{self.bottom + 4}" '
                f'stroke="{INK}"/><text x="{x:.1f}" y="{self.bottom + 17}" '
                f'text-anchor="middle">{day.strftime("%d %b")}</text>'
            )
            day += timedelta(days=step)

    def box(self, parts: list[str]) -> None:
        """The left and bottom spines."""
        parts.append(
            f'<path d="M{self.left},{self.top} V{self.bottom} H{self.right}" fill="none" '
            f'stroke="{INK}" stroke-width="0.8"/>'
        )

    def labels(self, parts: list[str], title: str, x_label: str, y_label: str | None) -> None:
        """The title above the plot (left), the x label below it, the y label turned."""
        parts.append(
            f'<text x="{self.left}" y="22" font-size="14" font-weight="bold">'
            f"{_xml_text(title)}</text>"
            f'<text x="{(self.left + self.right) / 2:.1f}" y="{self.bottom + 40}" '
            f'text-anchor="middle">{_xml_text(x_label)}</text>'
        )
        if y_label:
            parts.append(
                f'<text transform="translate(16 {(self.top + self.bottom) / 2:.1f}) '
                f'rotate(-90)" text-anchor="middle">{_xml_text(y_label)}</text>'
            )


def _legend(parts: list[str], right: float, y: float, items: list[tuple[str, str]]) -> None:
    """Swatches and labels, right-aligned at `right`: (svg of a 16 px swatch at 0,0, label)."""
    x = right
    for swatch, label in reversed(items):
        x -= _CHAR_W * len(label) + 4
        parts.append(f'<text x="{x:.1f}" y="{y}" dominant-baseline="central">{label}</text>')
        x -= 22
        parts.append(f'<g transform="translate({x:.1f} {y})">{swatch}</g>')
        x -= 14


def _polyline(frame: _Frame, xs: Sequence[float], ys: Sequence[float]) -> str:
    return " ".join(f"{frame.x(a):.1f},{frame.y(b):.1f}" for a, b in zip(xs, ys, strict=True))


def _markers(
    frame: _Frame, xs: Sequence[float], ys: Sequence[float], shape: str, color: str
) -> str:
    out = []
    for a, b in zip(xs, ys, strict=True):
        px, py = frame.x(a), frame.y(b)
        if shape == "square":
            out.append(f'<rect x="{px - 2.5:.1f}" y="{py - 2.5:.1f}" width="5" height="5"/>')
        else:
            out.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="2.8"/>')
    return f'<g fill="{color}">{"".join(out)}</g>'


def spend_chart(
    days: Sequence[date],
    cost: Sequence[float],
    idle_cost: Sequence[float],
    *,
    currency: str,
    symbol: str,
    salt: str,
) -> Markup:
    """Daily spend with the idle part of it, one currency: a line over filled idle cost."""
    del salt  # no ids inside: nothing can collide between the SVGs of one page
    title = f"Daily spend and idle GPU cost ({currency})"
    parts = _open_svg(title, 300)
    frame = _Frame(left=90, top=50, right=780, bottom=250)
    values = [float(v) for v in cost] + [float(v) for v in idle_cost]
    frame.money_y_axis(parts, values, symbol)
    if days:
        frame.day_x_axis(parts, days)
        xs = [d.toordinal() for d in days]
        idle = [float(v) for v in idle_cost]
        area = _polyline(frame, xs, idle)
        base = f"{frame.x(xs[-1]):.1f},{frame.y(0):.1f} {frame.x(xs[0]):.1f},{frame.y(0):.1f}"
        parts.append(
            f'<polygon points="{area} {base}" fill="{IDLE_COLOR}" fill-opacity="0.55"/>'
            f'<polyline points="{_polyline(frame, xs, [float(v) for v in cost])}" fill="none" '
            f'stroke="{SPEND_COLOR}" stroke-width="2.2" stroke-linejoin="round"/>'
        )
        if len(days) <= 31:
            parts.append(_markers(frame, xs, [float(v) for v in cost], "circle", SPEND_COLOR))
    frame.box(parts)
    frame.labels(parts, title, "Day (UTC)", f"{currency} per day")
    _legend(
        parts,
        780,
        38,
        [
            (
                f'<rect x="0" y="-5" width="16" height="10" fill="{IDLE_COLOR}" '
                'fill-opacity="0.55"/>',
                "Idle GPU cost",
            ),
            (
                f'<line x1="0" y1="0" x2="16" y2="0" stroke="{SPEND_COLOR}" stroke-width="2.2"/>',
                "Spend",
            ),
        ],
    )
    return _close_svg(parts)


def idle_by_cluster_chart(
    names: Sequence[str],
    idle_cost: Sequence[float],
    *,
    currency: str,
    symbol: str,
    period: str,
    salt: str,
) -> Markup:
    """Horizontal bars: the clusters with the most idle GPU cost in the period, largest on top."""
    del salt
    title = f"Top clusters by idle GPU cost, {period} ({currency})"
    labels = [short_label(n) for n in names]
    bar_h = 20
    height = 50 + bar_h * max(len(labels), 1) + 55
    parts = _open_svg(title, height)
    left = min(360.0, 24 + _CHAR_W * max((len(lb) for lb in labels), default=4))
    frame = _Frame(left=left, top=40, right=750, bottom=40 + bar_h * max(len(labels), 1))
    values = [float(v) for v in idle_cost]
    ticks = nice_ticks(0.0, max(values or [0.0]) or 1.0)
    frame.x_lo, frame.x_hi = 0.0, ticks[-1]
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    for t in ticks:
        x = frame.x(t)
        parts.append(
            f'<line x1="{x:.1f}" y1="{frame.top}" x2="{x:.1f}" y2="{frame.bottom}" '
            f'stroke="{GRID}" stroke-width="0.8"/><text x="{x:.1f}" y="{frame.bottom + 17}" '
            f'text-anchor="middle">{_xml_text(_money_label(t, symbol, step))}</text>'
        )
    bars = []
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        y = frame.top + i * bar_h
        width = max(frame.x(value) - frame.left, 0.0)
        bars.append(
            f'<rect x="{frame.left}" y="{y + 3.5}" width="{width:.1f}" height="{bar_h - 7}"/>'
        )
        parts.append(
            f'<text x="{frame.left - 6}" y="{y + bar_h / 2:.1f}" text-anchor="end" '
            f'dominant-baseline="central">{_xml_text(label)}</text>'
        )
    parts.append(f'<g fill="{IDLE_COLOR}">{"".join(bars)}</g>')
    frame.box(parts)
    frame.labels(parts, title, f"Idle GPU cost ({currency})", None)
    return _close_svg(parts)


def projection_chart(
    days: Sequence[date],
    projected: Sequence[float],
    actual: Sequence[float],
    *,
    currency: str,
    symbol: str,
    salt: str,
) -> Markup:
    """Next-24-hour projections against what was then billed, by the day they were made."""
    del salt
    title = f"Projected vs actual cost of the next 24 h ({currency})"
    parts = _open_svg(title, 300)
    frame = _Frame(left=90, top=50, right=780, bottom=250)
    proj = [float(v) for v in projected]
    act = [float(v) for v in actual]
    frame.money_y_axis(parts, proj + act, symbol)
    if days:
        frame.day_x_axis(parts, days)
        xs = [d.toordinal() for d in days]
        parts.append(
            f'<polyline points="{_polyline(frame, xs, proj)}" fill="none" '
            f'stroke="{PROJECTED_COLOR}" stroke-width="1.8" stroke-dasharray="6 4"/>'
            + _markers(frame, xs, proj, "square", PROJECTED_COLOR)
            + f'<polyline points="{_polyline(frame, xs, act)}" fill="none" '
            f'stroke="{ACTUAL_COLOR}" stroke-width="2.2" stroke-linejoin="round"/>'
            + _markers(frame, xs, act, "circle", ACTUAL_COLOR)
        )
    frame.box(parts)
    frame.labels(parts, title, "Day the projection was made (UTC)", f"{currency} per 24 h")
    _legend(
        parts,
        780,
        38,
        [
            (
                f'<line x1="0" y1="0" x2="16" y2="0" stroke="{PROJECTED_COLOR}" '
                'stroke-width="1.8" stroke-dasharray="6 4"/>',
                "Projected by the provider",
            ),
            (
                f'<line x1="0" y1="0" x2="16" y2="0" stroke="{ACTUAL_COLOR}" stroke-width="2.2"/>',
                "Actual",
            ),
        ],
    )
    return _close_svg(parts)


def utilization_heatmap(
    gpu_labels: Sequence[str],
    start: datetime,
    hours: int,
    matrix: np.ndarray,
    *,
    idle_threshold_pct: float,
    salt: str,
    cluster_wide: bool = False,
) -> Markup:
    """GPUs x hours of utilization (%), NaN where there is no data, as a hand-written SVG.

    The cells are one small PNG (one pixel per GPU-hour, scaled without smoothing), the axes,
    ticks and colour bar are SVG text and lines. Drawing this through matplotlib took 0.13 s per
    cluster (axes, ticks and a colour bar built and laid out for every figure); this takes about
    a millisecond, so a report can show a heatmap for every cluster section.
    """
    del salt  # no ids inside: nothing can collide between the SVGs of one page
    what = "cluster average" if cluster_wide else "per GPU"
    title = f"GPU utilization, {what}, last {hours // 24} days (idle < {idle_threshold_pct:g} %)"
    rows = max(len(gpu_labels), 1)
    data = np.asarray(matrix, dtype=float).reshape(rows, hours)
    plot_h = _HEAT_ROW * max(rows, 2)
    labels = [short_label(label, 14) for label in gpu_labels] or [""]
    # room on the left for the longest label (about 7.5 px per character at 12 px)
    label_w = 7.5 * max(len(label) for label in labels)
    x0, x1 = max(_HEAT_LEFT, round(label_w) + 40), _HEAT_RIGHT
    y0, y1 = _HEAT_TOP, _HEAT_TOP + plot_h
    height = y1 + 58
    px_per_hour = (x1 - x0) / hours
    e = _xml_text
    parts = [
        f'<svg class="chart" role="img" aria-label="{e(title)}" width="{_HEAT_WIDTH}" '
        f'height="{height}" viewBox="0 0 {_HEAT_WIDTH} {height}" '
        'xmlns="http://www.w3.org/2000/svg" font-family="DejaVu Sans, sans-serif" '
        'font-size="12" fill="#262626">',
        f'<rect width="{_HEAT_WIDTH}" height="{height}" fill="#ffffff"/>',
        f'<text x="{x0}" y="{y0 - 10}" font-size="14" font-weight="bold">{e(title)}</text>',
        _png_image(_heat_rgb(data), x0, y0, x1 - x0, plot_h),
        f'<rect x="{x0}" y="{y0}" width="{x1 - x0}" height="{plot_h}" fill="none" '
        'stroke="#262626" stroke-width="0.8"/>',
    ]
    # y: one label per row, centred on it (as matplotlib's imshow ticks were)
    row_h = plot_h / rows
    for i, label in enumerate(labels):
        y = y0 + row_h * (i + 0.5)
        parts.append(
            f'<text x="{x0 - 6}" y="{y:.1f}" text-anchor="end" dominant-baseline="central">'
            f"{e(label)}</text>"
        )
    if not cluster_wide:
        parts.append(
            f'<text transform="translate({x0 - label_w - 18:.0f} {(y0 + y1) / 2:.1f}) '
            'rotate(-90)" '
            'text-anchor="middle">GPU</text>'
        )
    # x: a tick at each UTC midnight inside the window, labelled with that day
    first = start.replace(hour=0, minute=0, second=0, microsecond=0)
    day = first if first >= start else first + timedelta(days=1)
    while day <= start + timedelta(hours=hours):
        x = x0 + (day - start).total_seconds() / 3600 * px_per_hour
        parts.append(
            f'<line x1="{x:.1f}" y1="{y1}" x2="{x:.1f}" y2="{y1 + 4}" stroke="#262626"/>'
            f'<text x="{x:.1f}" y="{y1 + 17}" text-anchor="middle">'
            f"{day.strftime('%a %d %b')}</text>"
        )
        day += timedelta(days=1)
    parts.append(
        f'<text x="{(x0 + x1) / 2:.1f}" y="{y1 + 40}" text-anchor="middle">Hour (UTC)</text>'
    )
    # colour bar: the same colour map, 0 % at the bottom, 100 % at the top
    bar_x = x1 + 12
    ramp = np.linspace(100, 0, 101).reshape(101, 1)
    parts.append(_png_image(_heat_rgb(ramp), bar_x, y0, _HEAT_BAR, plot_h))
    parts.append(
        f'<rect x="{bar_x}" y="{y0}" width="{_HEAT_BAR}" height="{plot_h}" fill="none" '
        'stroke="#262626" stroke-width="0.8"/>'
    )
    for pct in range(0, 101, 50 if plot_h < 80 else 25):
        y = y1 - plot_h * pct / 100
        parts.append(
            f'<line x1="{bar_x + _HEAT_BAR}" y1="{y:.1f}" x2="{bar_x + _HEAT_BAR + 3}" '
            f'y2="{y:.1f}" stroke="#262626"/><text x="{bar_x + _HEAT_BAR + 5}" y="{y:.1f}" '
            f'dominant-baseline="central" font-size="11">{pct}</text>'
        )
    parts.append(
        f'<text transform="translate({bar_x + _HEAT_BAR + 38} {(y0 + y1) / 2:.1f}) rotate(-90)"'
        ' text-anchor="middle">Utilization (%)</text>'
    )
    parts.append("</svg>")
    # Safe to inline: every text from data went through _xml_text.
    return Markup("".join(parts))  # noqa: S704


_HEAT_WIDTH = 800
_HEAT_LEFT = 64
_HEAT_RIGHT = 700
_HEAT_TOP = 34
_HEAT_ROW = 18
_HEAT_BAR = 14


def _heat_rgb(data: np.ndarray) -> np.ndarray:
    """Utilization in 0-100 (NaN: no data) -> RGB bytes: linear between the colour stops."""
    scaled = np.clip(np.nan_to_num(data, nan=0.0), 0, 100) / 100.0 * (len(_HEAT_STOPS) - 1)
    low = np.minimum(np.floor(scaled).astype(int), len(_HEAT_STOPS) - 2)
    frac = (scaled - low)[..., None]
    rgb = _HEAT_STOPS[low] * (1 - frac) + _HEAT_STOPS[low + 1] * frac
    out = np.rint(rgb).astype(np.uint8)
    out[np.isnan(data)] = _HEAT_BAD
    return np.ascontiguousarray(out)


def _png_image(rgb: np.ndarray, x: float, y: float, width: float, height: float) -> str:
    """An SVG <image> of an RGB array (one pixel per cell), stretched without smoothing."""
    rows, cols = rgb.shape[:2]
    raw = b"".join(b"\x00" + rgb[r].tobytes() for r in range(rows))  # filter 0 on each row

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + kind
            + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", cols, rows, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )
    href = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return (
        f'<image x="{x}" y="{y}" width="{width}" height="{height}" preserveAspectRatio="none" '
        f'image-rendering="optimizeSpeed" style="image-rendering:pixelated" href="{href}"/>'
    )
