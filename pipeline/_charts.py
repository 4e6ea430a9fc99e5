"""Charts for the HTML report, as inline SVG strings.

Every chart has a title, axis labels and units. The spend, idle and projection charts are drawn by
matplotlib (Agg, no pyplot state) with text kept as text (`svg.fonttype = none`), so the SVG is
small and readable by a screen reader; labels never go through mathtext (a cluster named `$HOME`
must not break a chart) and matplotlib escapes them as XML text, so a hostile name is shown, never
run. The utilization heatmap, drawn once per cluster section, is written by hand (SVG text and
lines around one small PNG of the cells, every label escaped here): matplotlib took 0.13 s for
each, and the raster keeps a 1,000-cluster report a few MB.
"""

from __future__ import annotations

import base64
import io
import re
import struct
import zlib
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.dates as mdates  # noqa: E402
import numpy as np  # noqa: E402
from markupsafe import Markup  # noqa: E402
from matplotlib.colors import LinearSegmentedColormap  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

SPEND_COLOR = "#2f6db5"
IDLE_COLOR = "#d9822b"
ACTUAL_COLOR = "#2f6db5"
PROJECTED_COLOR = "#8a8f98"
LABEL_MAX_CHARS = 28

# Busy is dark blue, idle is pale: the eye goes to where GPUs work; missing data is grey.
_HEATMAP = LinearSegmentedColormap.from_list(
    "gpucost_util", ["#fbf3e4", "#f2c57c", "#5b9bd5", "#1f3f73"]
).with_extremes(bad="#d9d9d9")

_RC: dict[Any, Any] = {
    "svg.fonttype": "none",
    "text.parse_math": False,
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans"],
    "font.size": 9,
    "axes.titlesize": 11,
    "axes.titleweight": "bold",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#e3e6ea",
    "grid.linewidth": 0.6,
    "svg.image_inline": True,
}

_XML_PROLOG = re.compile(r"^.*?(?=<svg)", re.S)
_METADATA = re.compile(r"<metadata>.*?</metadata>\s*", re.S)
_SVG_TAG = re.compile(r"<svg ")


def short_label(text: str | None, limit: int = LABEL_MAX_CHARS) -> str:
    """A chart label: one line, at most `limit` characters (an ellipsis marks a cut)."""
    one_line = " ".join(str(text or "").split())
    return one_line if len(one_line) <= limit else one_line[: limit - 1] + "…"


def _to_svg(fig: Figure, salt: str, title: str) -> Markup:
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": salt}):
        # Fixed margins rather than bbox_inches="tight": that draws every figure twice.
        fig.savefig(buf, format="svg", metadata={"Date": None})
    svg = _XML_PROLOG.sub("", buf.getvalue(), count=1)
    svg = _METADATA.sub("", svg, count=1)
    # The page's CSS sizes charts; an aria-label makes the chart's title readable to assistive tech.
    aria = title.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
    svg = _SVG_TAG.sub(f'<svg class="chart" role="img" aria-label="{aria}" ', svg, count=1)
    # Safe to inline: matplotlib writes every label as escaped XML text (a cluster named
    # "<script>" becomes "&lt;script&gt;"), and the title above is escaped here.
    return Markup(svg)  # noqa: S704


def _money_axis(currency_label: str) -> FuncFormatter:
    return FuncFormatter(lambda v, _pos: f"{currency_label}{v:,.0f}")


def _date_axis(ax: Any, days: Sequence[date]) -> None:
    """Readable day ticks; a chart of one or two days gets a day of air on each side."""
    locator = mdates.AutoDateLocator(minticks=3, maxticks=10)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%d %b"))
    if days and len(days) <= 2:
        ax.set_xlim(
            mdates.date2num(min(days) - timedelta(days=1)),
            mdates.date2num(max(days) + timedelta(days=1)),
        )


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
    title = f"Daily spend and idle GPU cost ({currency})"
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(8.0, 3.0))
        fig.subplots_adjust(left=0.11, right=0.98, top=0.86, bottom=0.2)
        ax = fig.add_subplot()
        x = np.array(days, dtype="datetime64[D]")
        ax.fill_between(
            x,
            np.asarray(idle_cost, dtype=float),
            step=None,
            color=IDLE_COLOR,
            alpha=0.55,
            label="Idle GPU cost",
            linewidth=0,
        )
        ax.plot(
            x,
            np.asarray(cost, dtype=float),
            color=SPEND_COLOR,
            linewidth=1.8,
            marker="o" if len(days) <= 31 else None,
            markersize=3,
            label="Spend",
        )
        ax.set_title(title, loc="left", pad=18)
        ax.set_ylabel(f"{currency} per day")
        ax.set_xlabel("Day (UTC)")
        ax.yaxis.set_major_formatter(_money_axis(symbol))
        ax.set_ylim(bottom=0)
        _date_axis(ax, days)
        ax.legend(loc="lower right", frameon=False, ncols=2, bbox_to_anchor=(1.0, 1.0))
        return _to_svg(fig, salt, title)


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
    title = f"Top clusters by idle GPU cost, {period} ({currency})"
    with matplotlib.rc_context(_RC):
        height = 1.1 + 0.26 * max(len(names), 1)
        fig = Figure(figsize=(8.0, height))
        labels = [short_label(n) for n in names][::-1]
        # room on the left for the longest name (about 0.07 in per character at 9 pt)
        left = min(0.45, (0.25 + 0.068 * max((len(lb) for lb in labels), default=4)) / 8.0)
        fig.subplots_adjust(left=left, right=0.97, top=1 - 0.4 / height, bottom=0.55 / height)
        ax = fig.add_subplot()
        values = np.asarray(idle_cost, dtype=float)[::-1]
        y = np.arange(len(labels))
        ax.barh(y, values, color=IDLE_COLOR, height=0.65)
        ax.set_yticks(y, labels)
        ax.grid(axis="y", visible=False)
        ax.set_title(title, loc="left")
        ax.set_xlabel(f"Idle GPU cost ({currency})")
        ax.xaxis.set_major_formatter(_money_axis(symbol))
        return _to_svg(fig, salt, title)


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
    title = f"Projected vs actual cost of the next 24 h ({currency})"
    with matplotlib.rc_context(_RC):
        fig = Figure(figsize=(8.0, 3.0))
        fig.subplots_adjust(left=0.11, right=0.98, top=0.86, bottom=0.2)
        ax = fig.add_subplot()
        x = np.array(days, dtype="datetime64[D]")
        ax.plot(
            x,
            np.asarray(projected, dtype=float),
            color=PROJECTED_COLOR,
            linestyle="--",
            marker="s",
            markersize=3,
            linewidth=1.4,
            label="Projected by the provider",
        )
        ax.plot(
            x,
            np.asarray(actual, dtype=float),
            color=ACTUAL_COLOR,
            marker="o",
            markersize=3,
            linewidth=1.8,
            label="Actual",
        )
        ax.set_title(title, loc="left", pad=18)
        ax.set_ylabel(f"{currency} per 24 h")
        ax.set_xlabel("Day the projection was made (UTC)")
        ax.yaxis.set_major_formatter(_money_axis(symbol))
        ax.set_ylim(bottom=0)
        _date_axis(ax, days)
        ax.legend(loc="lower right", frameon=False, ncols=2, bbox_to_anchor=(1.0, 1.0))
        return _to_svg(fig, salt, title)


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


def _xml_text(text: str) -> str:
    return (
        str(text)
        .replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
    )


def _heat_rgb(data: np.ndarray) -> np.ndarray:
    """Utilization in 0-100 (NaN: no data) -> RGB bytes through the heatmap's colour map."""
    rgba = _HEATMAP(np.ma.masked_invalid(np.clip(data, 0, 100) / 100.0), bytes=True)
    return np.ascontiguousarray(rgba[..., :3], dtype=np.uint8)


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
