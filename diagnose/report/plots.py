"""Figures of a run with its findings drawn where they happen (matplotlib, Agg, no pyplot).

One column per run, one row per kind of panel the runs hold: loss and
validation curves, learning rate, gradient norm, memory, and per-layer heat
maps of gradient norms and activation spread. Each finding is drawn on the
loss panel and on the panel of its own category: a shaded band from onset to
end, ticks at its listed steps, a line at a single step (the first NaN, with
its module), a dotted line at a best step named in its evidence.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text
from matplotlib.ticker import LogLocator, MaxNLocator

from diagnose.escaping import plain_in_figure
from diagnose.rules.base import Category, Finding, Severity
from diagnose.rules.engine import Analysis
from diagnose.run import Run

# More points than this per curve are thinned to the min and max of buckets,
# so spikes survive and a million-step run still draws in well under a second.
MAX_POINTS = 4000
MAX_HEAT_ROWS = 600
COLOURS = {Severity.ERROR: "#d62728", Severity.WARNING: "#ff7f0e", Severity.INFO: "#1f77b4"}
MEMORY_FIELDS = ("rss", "cuda_allocated", "cuda_reserved", "cuda_peak", "gpu_mem_used")
# One run's figure fills an HTML report's column (70em at 90 dpi is about 1100 px).
PANEL_WIDTH, PANEL_HEIGHT = 12.0, 2.6
# A heat-map row needs this many inches for its x-small label not to touch the next one.
HEAT_ROW_HEIGHT = 0.16
# Module names longer than this are shortened on the axis to their last dotted parts.
MAX_LABEL_CHARS = 28
ZERO_COLOUR, MISSING_COLOUR = "#d62728", "#ffffff"
# Up to this many runs a figure has a column of every panel for each run; more
# get `summary_figure`: the loss of the worst `SMALL_MULTIPLES` of them as small
# multiples, `SUMMARY_COLUMNS` a row (a 1,000-run figure in full was 2.4 GB).
FULL_COLUMNS = 6
SMALL_MULTIPLES = 48
SUMMARY_COLUMNS = 6
SMALL_WIDTH, SMALL_HEIGHT = 3.2, 1.9
# Inches: the summary's title band, and the margins and gaps around its small multiples
# (left, right, bottom, top, between columns, between rows) that tick labels and titles need.
SUMMARY_TITLE = 0.6
SMALL_MARGINS = (0.5, 0.15, 0.35, 0.1, 0.55, 0.5)
# Matplotlib lays out axes in float64: a range near the float limit (1.8e308) overflows its tick
# arithmetic. Values (and steps) beyond this magnitude are left off the figure like NaN.
DRAWABLE = 1e300


@dataclass(frozen=True)
class Panel:
    key: str
    title: str
    has: Callable[[Run], bool]
    draw: Callable[[Axes, Run], None]
    categories: tuple[Category, ...] = ()
    x: str = "step"  # what the horizontal axis holds: findings are marked by step, or by learning rate
    layer_column: str = ""  # for a per-layer heat map: the layer field it shows


# -- curves ----------------------------------------------------------------------


def drawable(values: np.ndarray) -> np.ndarray:
    """Which values a figure can show: finite and within `DRAWABLE`."""
    return np.abs(np.nan_to_num(values, nan=np.inf)) <= DRAWABLE


def thin(values: pd.Series, max_points: int = MAX_POINTS) -> pd.Series:
    """Drawable points of a curve, at most about ``max_points``, keeping each bucket's min and max."""
    steps = values.index.to_numpy(dtype="float64") if values.index.dtype.kind in "fiu" else None
    keep = drawable(values.to_numpy(dtype="float64"))
    values = values[keep & drawable(steps)] if steps is not None else values[keep]
    buckets = max_points // 2
    if len(values) <= max_points:
        return values
    size = len(values) // buckets
    body = values.to_numpy()[: buckets * size].reshape(buckets, size)
    base = np.arange(buckets) * size
    rest = np.arange(buckets * size, len(values))
    keep = np.unique(np.concatenate([base + body.argmin(1), base + body.argmax(1), rest]))
    return values.iloc[keep]


def wants_log(values: pd.Series) -> bool:
    """Log scale helps when a curve is positive and spans more than one decade."""
    finite = values[drawable(values.to_numpy(dtype="float64"))]
    return bool(len(finite)) and finite.min() > 0 and finite.max() / finite.min() > 10


def _curves(ax: Axes, run: Run, columns: Sequence[str], scale: float = 1.0) -> None:
    drawn = [c for c in columns if run.has(c)]
    for column in drawn:
        curve = thin(run.series(column)) / scale
        ax.plot(curve.index, curve.to_numpy(), lw=1, marker="o" if len(curve) < 30 else None, ms=3, label=column)
    every = pd.concat([run.series(c) for c in drawn])
    if wants_log(every):
        ax.set_yscale("log")
    else:
        ax.ticklabel_format(axis="y", useOffset=False)
    if len(drawn) > 1:
        ax.legend(loc="upper right", fontsize="small")


def _memory(ax: Axes, run: Run) -> None:
    """Memory from zero: a flat line must look flat, not like growth magnified a thousandfold."""
    _curves(ax, run, MEMORY_FIELDS, 2**30)
    if ax.get_yscale() == "linear":
        highest = max(float(thin(run.series(c)).max()) for c in MEMORY_FIELDS if run.has(c)) / 2**30
        ax.set_ylim(bottom=0, top=max(highest * 1.15, 1e-3))


def _has_any(*columns: str) -> Callable[[Run], bool]:
    return lambda run: any(run.has(c) for c in columns)


def _heat(column: str) -> Callable[[Axes, Run], None]:
    def draw(ax: Axes, run: Run) -> None:
        table = run.layer_series(column)
        table = table[drawable(table.index.to_numpy(dtype="float64"))].dropna(axis=1, how="all")
        table = table.iloc[:: max(1, len(table) // MAX_HEAT_ROWS)]
        values = table.to_numpy(dtype="float64")
        values = np.where(drawable(values), values, np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            logged = np.log10(values)
        finite = logged[np.isfinite(logged)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (-1.0, 0.0)
        # Exactly zero (a dead layer: the key evidence) is coloured apart from "not sampled".
        logged[values == 0] = low - 1.0
        cmap = colormaps["viridis"].with_extremes(under=ZERO_COLOUR, bad=MISSING_COLOUR)
        mesh = ax.pcolormesh(
            _edges(table.index.to_numpy(dtype="float64")),
            np.arange(len(table.columns) + 1) - 0.5,
            np.ma.masked_invalid(logged.T),
            cmap=cmap,
            vmin=low,
            vmax=max(high, low + 1e-9),
            shading="flat",
        )
        names = [run.module_label(m).removeprefix("model.") for m in table.columns]
        ax.set_yticks(range(len(table.columns)), module_labels(names), fontsize="x-small")
        ax.set_ylim(len(table.columns) - 0.5, -0.5)
        extend = "min" if (values == 0).any() else "neither"
        bar = ax.figure.colorbar(mesh, ax=ax, pad=0.01, extend=extend)
        bar.set_label(f"log10 {column}" + ("\n(red: exactly 0)" if extend == "min" else ""), fontsize="x-small")

    return draw


def module_labels(names: Sequence[str], most: int = MAX_LABEL_CHARS) -> list[str]:
    """Axis labels for module names: long ones keep their last dotted parts, behind an ellipsis.
    Tick labels are drawn from these strings at draw time, so they are made literal here."""
    return [plain_in_figure(_shorten(str(name), most)) for name in names]


def _shorten(name: str, most: int) -> str:
    """``transformer.layers.5.attention_output_projection`` -> ``…5.attention_ou…t_projection``.

    The last part and the nearest index before it are what tell blocks apart; the rest goes.
    """
    if len(name) <= most:
        return name
    parts = name.split(".")
    index = next((p for p in reversed(parts[:-1]) if p.isdigit()), None)
    head = "\N{HORIZONTAL ELLIPSIS}" + (f"{index}." if index else "")
    last, room = parts[-1], most - len(head)
    if len(last) > room:
        keep = room - 1
        last = last[: keep // 2] + "\N{HORIZONTAL ELLIPSIS}" + last[len(last) - (keep - keep // 2) :]
    return head + last


def heat_rows(run: Run, column: str) -> int:
    """Modules with at least one finite value of ``column``: the rows a heat map can colour."""
    table = run.layer_series(column)
    return int(np.isfinite(table.to_numpy(dtype="float64")).any(axis=0).sum()) if not table.empty else 0


def _edges(steps: np.ndarray) -> np.ndarray:
    """Cell edges around sampled steps: halfway between neighbours, half a gap beyond the ends."""
    if len(steps) == 1:
        return np.array([steps[0] - 0.5, steps[0] + 0.5])
    middle = (steps[1:] + steps[:-1]) / 2
    return np.concatenate([[steps[0] - (middle[0] - steps[0])], middle, [steps[-1] + (steps[-1] - middle[-1])]])


def _lr_range(ax: Axes, run: Run) -> None:
    """The preflight learning-rate range test: loss against a learning rate rising exponentially."""
    lr = run.series("lr")
    for column, style in (("lr_test_loss", {"alpha": 0.35, "lw": 0.8}), ("lr_test_smoothed", {"lw": 1.5})):
        if run.has(column):
            loss = run.series(column)
            shared = loss.index.intersection(lr.index)
            ax.plot(lr.loc[shared].to_numpy(), loss.loc[shared].to_numpy(), label=column, **style)
    start = run.series("lr_test_smoothed" if run.has("lr_test_smoothed") else "lr_test_loss")
    if len(start) and np.isfinite(start.iloc[0]) and start.iloc[0] > 0:
        top = 2.5 * float(start.iloc[0])  # past that the test has diverged: nothing to read
        lowest = float(thin(start).min())
        ax.set_ylim(lowest - 0.05 * (top - lowest), top)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate", fontsize="small")
    ax.legend(loc="upper left", fontsize="x-small")


# Evidence keys of the range-test findings that name a learning rate, and how to draw them.
LR_MARKS = {
    "suggested": ("#2ca02c", "-"),
    "steepest": ("#9467bd", ":"),
    "lr_at_minimum": ("#7f7f7f", ":"),
    "diverged_at": ("#d62728", "--"),
    "user_lr": ("#ff7f0e", "-."),
}


def mark_learning_rates(ax: Axes, findings: Sequence[Finding]) -> None:
    for finding in findings:
        for key, (colour, style) in LR_MARKS.items():
            value = finding.evidence.get(key)
            if isinstance(value, (int, float)) and value > 0:
                ax.axvline(value, color=colour, ls=style, lw=1.2, label=f"{key} {value:.2g} ({finding.code})")


def _has_layers(column: str) -> Callable[[Run], bool]:
    return lambda run: not run.layer_series(column).empty


PANELS = (
    Panel("loss", "loss", _has_any("loss", "val_loss"), lambda ax, run: _curves(ax, run, ("loss", "val_loss"))),
    Panel(
        "lr",
        "learning rate",
        lambda run: run.has("lr") and not run.has("lr_test_loss"),
        lambda ax, run: _curves(ax, run, ("lr",)),
        (Category.OPTIMIZATION,),
    ),
    Panel("lr_range", "loss (range test)", _has_any("lr_test_loss"), _lr_range, (Category.PREFLIGHT,), x="lr"),
    Panel(
        "grad_norm",
        "gradient norm",
        _has_any("grad_norm"),
        lambda ax, run: _curves(ax, run, ("grad_norm",)),
        (Category.GRADIENTS,),
    ),
    Panel("memory", "memory (GiB)", _has_any(*MEMORY_FIELDS), lambda ax, run: _memory(ax, run), (Category.RESOURCES,)),
    Panel(
        "layer_grad",
        "per-layer gradient norm",
        _has_layers("grad_norm"),
        _heat("grad_norm"),
        (Category.GRADIENTS,),
        layer_column="grad_norm",
    ),
    Panel(
        "layer_act",
        "per-layer activation std",
        _has_layers("act_std"),
        _heat("act_std"),
        (Category.ACTIVATIONS,),
        layer_column="act_std",
    ),
)


# -- findings --------------------------------------------------------------------


def draw_finding(ax: Axes, finding: Finding) -> None:
    """Mark a finding on an axis whose x is the step."""
    colour = COLOURS[finding.severity]
    module = finding.module or ""
    label = finding.code + (f" {module}" if module.startswith("(") else f" ({module})" if module else "")
    if finding.onset is not None and finding.end is not None and finding.end != finding.onset:
        ax.axvspan(finding.onset, finding.end, color=colour, alpha=0.12, label=label)
    elif finding.onset is not None:
        # Named in the legend, not by text beside the line: labels of nearby findings would overprint.
        ax.axvline(finding.onset, color=colour, ls="--", lw=1.2, label=label)
    if finding.steps:
        ax.plot(
            list(finding.steps),
            [0.98] * len(finding.steps),
            "v",
            color=colour,
            ms=5,
            transform=ax.get_xaxis_transform(),
            label=None if finding.onset is not None else label,
        )
    for key, value in finding.evidence.items():
        if ("best" in key or "lowest" in key) and key.endswith("step") and isinstance(value, (int, float)):
            ax.axvline(value, color="#2ca02c", ls=":", lw=1.2, label=f"{key} ({finding.code})")


def _findings_for(panel: Panel, findings: Sequence[Finding]) -> list[Finding]:
    if panel.key == "loss":
        return list(findings)
    return [f for f in findings if f.category in panel.categories]


# -- figures ---------------------------------------------------------------------


def figure(analyses: Sequence[Analysis]) -> Figure:
    """One column per run, one row per panel kind that any of the runs holds; more than
    `FULL_COLUMNS` runs: the `summary_figure`."""
    if len(analyses) > FULL_COLUMNS:
        return summary_figure(analyses)
    panels = [p for p in PANELS if any(p.has(a.run) for a in analyses)] or [PANELS[0]]
    heights = [_panel_height(panel, analyses) for panel in panels]
    fig = Figure(figsize=(PANEL_WIDTH * len(analyses), sum(heights)), layout="constrained")
    # Step panels of a run share their x axis; a learning-rate panel keeps its own.
    grid = fig.subplots(len(panels), len(analyses), squeeze=False, gridspec_kw={"height_ratios": heights})
    for column, analysis in enumerate(analyses):
        # A heat map whose finite values fill a sliver of the run (it broke early) keeps its own axis.
        by_step = [
            grid[row][column]
            for row, panel in enumerate(panels)
            if panel.x == "step" and not _narrow_heat(panel, analysis.run)
        ]
        for ax in by_step[1:]:
            ax.sharex(by_step[0])
    for column, analysis in enumerate(analyses):
        grid[0][column].set_title(analysis.run.name, fontweight="bold", loc="left")
        for row, panel in enumerate(panels):
            _draw_panel(grid[row][column], panel, analysis)
        if panels[-1].x == "step":
            grid[-1][column].set_xlabel("step")
        _steps_span_the_axis(grid[0][column] if panels[0].x == "step" else None, analysis.run)
    return fig


def summary_note(count: int) -> str | None:
    """The line that says a figure of ``count`` runs is a summary; None when each run has its column."""
    if count <= FULL_COLUMNS:
        return None
    return (
        f"{count} runs (more than {FULL_COLUMNS}): the figure shows the loss of the "
        f"{min(count, SMALL_MULTIPLES)} worst as small multiples, worst first"
    )


def summary_figure(analyses: Sequence[Analysis], most: int | None = None) -> Figure:
    """Many runs as a grid of small multiples of their loss, findings marked: the worst ``most``
    (default `SMALL_MULTIPLES`) runs first, so that the figure stays readable and its
    memory bounded however many runs there are."""
    from diagnose.report.summary import order_runs

    shown = order_runs(analyses)[: most or SMALL_MULTIPLES]
    columns = min(SUMMARY_COLUMNS, len(shown))
    rows = -(-len(shown) // columns)
    width, height = SMALL_WIDTH * columns, SMALL_HEIGHT * rows + SUMMARY_TITLE
    fig = Figure(figsize=(width, height))
    left_out = f"; the {len(shown)} worst shown, worst first" if len(shown) < len(analyses) else ", worst first"
    fig.suptitle(f"{len(analyses)} runs{left_out}", fontweight="bold", y=1 - 0.15 / height, va="top")
    # Fixed margins instead of a constrained layout: every panel is alike, and solving the layout
    # of 48 axes took most of the figure's time.
    left, right, bottom, top, gap_x, gap_y = SMALL_MARGINS
    grid = fig.subplots(
        rows,
        columns,
        squeeze=False,
        gridspec_kw={
            "left": left / width,
            "right": 1 - right / width,
            "bottom": bottom / height,
            "top": 1 - (SUMMARY_TITLE + top) / height,
            "wspace": gap_x / (SMALL_WIDTH - gap_x),
            "hspace": gap_y / (SMALL_HEIGHT - gap_y),
        },
    )
    for ax, analysis in zip(grid.flat, shown, strict=False):
        _draw_panel(ax, PANELS[0], analysis)
        ax.set_title(analysis.run.name, fontsize="small", loc="left")
        ax.set_ylabel("")
        ax.tick_params(labelsize="x-small")
        ax.minorticks_off()  # unlabelled at this size; drawing them was a third of the figure's time
        _few_ticks(ax)
        if ax.get_legend() is not None:
            ax.get_legend().remove()
    for ax in grid.flat[len(shown) :]:
        ax.set_axis_off()
    return fig


def _few_ticks(ax: Axes) -> None:
    """Three or four labelled ticks per axis: all a small panel has room for, and each tick is a
    handful of artists to make and draw (ticks were most of the figure's time)."""
    ax.xaxis.set_major_locator(MaxNLocator(nbins=3, integer=True))
    ax.yaxis.set_major_locator(LogLocator(numticks=4) if ax.get_yscale() == "log" else MaxNLocator(nbins=3))


def _panel_height(panel: Panel, analyses: Sequence[Analysis]) -> float:
    """Heat maps grow with their module count, so that no two row labels touch."""
    if panel.layer_column:
        rows = max(heat_rows(a.run, panel.layer_column) for a in analyses)
        return max(PANEL_HEIGHT, 0.8 + HEAT_ROW_HEIGHT * rows)
    return PANEL_HEIGHT


def _narrow_heat(panel: Panel, run: Run, share: float = 0.1) -> bool:
    """True when the finite per-layer values of ``panel`` cover under ``share`` of the run's steps."""
    if not panel.layer_column or heat_rows(run, panel.layer_column) == 0:
        return False
    table = run.layer_series(panel.layer_column)
    sampled = table.index[np.isfinite(table.to_numpy(dtype="float64")).any(axis=1)]
    steps = run.steps["step"] if len(run.steps) else pd.Series(sampled)
    span = max(float(steps.max()) - float(steps.min()), 1.0)
    return float(sampled[-1] - sampled[0]) < share * span


def _steps_span_the_axis(ax: Axes | None, run: Run) -> None:
    """The step axis runs from the first logged step to the last, not from matplotlib's padded zero."""
    frames = [f["step"] for f in (run.steps, run.evals, run.layers) if len(f)]
    if ax is None or not frames:
        return
    steps = pd.concat(frames).to_numpy(dtype="float64")
    first, last = float(np.nanmin(steps)), float(np.nanmax(steps))
    if np.isfinite(first) and np.isfinite(last):
        ax.set_xlim(first, last if last > first else first + 1)


def _draw_panel(ax: Axes, panel: Panel, analysis: Analysis) -> None:
    ax.set_ylabel(panel.title, fontsize="small")
    if not panel.has(analysis.run):
        _say(ax, "not recorded")
        return
    if panel.layer_column and heat_rows(analysis.run, panel.layer_column) == 0:
        _say(ax, f"no finite per-layer values: the run broke or ended (step {analysis.run.last_step}) first")
        return
    panel.draw(ax, analysis.run)
    if panel.x == "step":
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
    if _narrow_heat(panel, analysis.run):
        sampled = analysis.run.layer_series(panel.layer_column).index.to_numpy()
        sampled = sampled[sampled <= ax.get_xlim()[1]]
        ax.set_xticks(sampled[:: max(1, len(sampled) // 8)])
        ax.set_title(
            f"finite values only at steps {sampled[0]:.0f}-{sampled[-1]:.0f} of {analysis.run.last_step}",
            fontsize="x-small",
            loc="right",
            color="grey",
        )
    findings = _findings_for(panel, analysis.findings)
    if panel.x == "lr":
        mark_learning_rates(ax, findings)
    else:
        for finding in findings:
            draw_finding(ax, finding)
    if findings and ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper right", fontsize="x-small")
    ax.grid(alpha=0.3)


def _say(ax: Axes, sentence: str) -> None:
    """An empty panel says why in words instead of showing blank axes."""
    ax.text(0.5, 0.5, sentence, ha="center", va="center", transform=ax.transAxes, color="grey")
    ax.set_xticks([])
    ax.set_yticks([])


def image_bytes(fig: Figure, format: str = "png") -> bytes:
    try:
        return _saved(fig, format)
    except (OverflowError, ValueError):
        # Values near the float limit can break a log axis's tick labels: draw such axes linear instead.
        for ax in fig.axes:
            if ax.get_yscale() == "log":
                ax.set_yscale("linear")
        return _saved(fig, format)


def _saved(fig: Figure, format: str) -> bytes:
    # Titles, legends and labels quote run, metric and module names: drawn literally, never as math.
    # Tick labels are written at draw time, after this, so a log axis keeps its formatted powers.
    for text in fig.findobj(Text):
        text.set_text(plain_in_figure(text.get_text()))
    buffer = io.BytesIO()
    FigureCanvasAgg(fig)
    fig.savefig(buffer, format=format, dpi=90)
    return buffer.getvalue()
