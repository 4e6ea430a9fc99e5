"""Charts for the HTML report: matplotlib (Agg, no pyplot state) rendered to inline SVG strings.

Every chart has a title, axis labels and units. Text stays text (`svg.fonttype = none`) so the SVG
is small and readable by a screen reader; the utilization heatmap is a raster image inside the SVG
so that a 1,000-cluster report stays a few MB. Labels never go through mathtext (a cluster named
`$HOME` must not break a chart) and matplotlib escapes them as XML text, so a hostile name is shown,
never run.
"""

from __future__ import annotations

import io
import re
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


def project_spend_chart(
    names: Sequence[str],
    cost: Sequence[float],
    idle_cost: Sequence[float],
    *,
    currency: str,
    symbol: str,
    period: str,
    salt: str,
) -> Markup:
    """Horizontal bars: each project's spend in the period with its idle GPU cost over it,
    largest on top."""
    title = f"Spend by project, {period} ({currency})"
    with matplotlib.rc_context(_RC):
        height = 1.3 + 0.3 * max(len(names), 1)
        fig = Figure(figsize=(8.0, height))
        labels = [short_label(n) for n in names][::-1]
        left = min(0.45, (0.25 + 0.068 * max((len(lb) for lb in labels), default=4)) / 8.0)
        fig.subplots_adjust(left=left, right=0.97, top=1 - 0.55 / height, bottom=0.55 / height)
        ax = fig.add_subplot()
        y = np.arange(len(labels))
        ax.barh(
            y, np.asarray(cost, dtype=float)[::-1], color=SPEND_COLOR, height=0.65, label="Spend"
        )
        ax.barh(
            y,
            np.asarray(idle_cost, dtype=float)[::-1],
            color=IDLE_COLOR,
            height=0.65,
            label="of which idle GPU cost",
        )
        ax.set_yticks(y, labels)
        ax.grid(axis="y", visible=False)
        ax.set_title(title, loc="left", pad=18)
        ax.set_xlabel(f"Spend ({currency})")
        ax.xaxis.set_major_formatter(_money_axis(symbol))
        ax.legend(loc="lower right", frameon=False, ncols=2, bbox_to_anchor=(1.0, 1.0))
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
    """GPUs x hours of utilization (%), NaN where there is no data; the image is rasterized."""
    what = "cluster average" if cluster_wide else "per GPU"
    title = f"GPU utilization, {what}, last {hours // 24} days (idle < {idle_threshold_pct:g} %)"
    with matplotlib.rc_context({**_RC, "axes.grid": False}):
        rows = max(len(gpu_labels), 1)
        height = 1.25 + 0.2 * max(rows, 2)  # room for the colour bar's label
        fig = Figure(figsize=(8.0, height))
        fig.subplots_adjust(left=0.1, right=0.9, top=1 - 0.35 / height, bottom=0.62 / height)
        ax = fig.add_subplot()
        x0 = mdates.date2num(start)
        x1 = x0 + hours / 24
        data = np.ma.masked_invalid(np.asarray(matrix, dtype=float))
        image = ax.imshow(
            data,
            aspect="auto",
            cmap=_HEATMAP,
            vmin=0,
            vmax=100,
            interpolation="nearest",
            extent=(x0, x1, rows - 0.5, -0.5),
            rasterized=True,
        )
        ax.set_yticks(range(rows), [short_label(g, 14) for g in gpu_labels] or [""])
        ax.xaxis_date()
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%a %d %b"))
        ax.xaxis.set_major_locator(mdates.DayLocator())
        ax.set_title(title, loc="left")
        ax.set_xlabel("Hour (UTC)")
        ax.set_ylabel("GPU" if not cluster_wide else "")
        bar = fig.colorbar(image, ax=ax, pad=0.01, fraction=0.04)
        bar.set_label("Utilization (%)")
        return _to_svg(fig, salt, title)
