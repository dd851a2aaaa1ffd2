"""Figures a person can read: no text over other text, with long module names too, at full width."""

from __future__ import annotations

import itertools
import re

import pytest
import torch
from matplotlib.axis import Axis
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text
from torch import nn

import diagnose
from diagnose.demo import RUNS, train
from diagnose.report.html import render_html
from diagnose.report.plots import figure


class LongNamedBlock(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.attention_output_projection = nn.Linear(width, width)
        self.feed_forward_activation = nn.ReLU()


class LongNamedModel(nn.Module):
    """24 modules whose dotted names are far longer than an axis label can hold."""

    def __init__(self, width: int = 8, blocks: int = 11) -> None:
        super().__init__()
        self.transformer_encoder_layers = nn.ModuleList(LongNamedBlock(width) for _ in range(blocks))
        self.classification_head_projection = nn.Linear(width, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.transformer_encoder_layers:
            x = block.feed_forward_activation(block.attention_output_projection(x))
        return self.classification_head_projection(x)


@pytest.fixture(scope="module")
def long_named(tmp_path_factory):
    torch.manual_seed(0)
    model = LongNamedModel()
    assert sum(1 for name, _ in model.named_modules() if name and "." in name) >= 24
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    path = tmp_path_factory.mktemp("long") / "long-names.jsonl"
    x, y = torch.randn(64, 8), torch.randint(0, 3, (64,))
    with diagnose.watch(model, optimizer, path, preset="full", every={"activations": 1}) as w:
        for _ in range(12):
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            w.log(loss=loss)
    return diagnose.analyze(diagnose.load(path))


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return [diagnose.analyze(diagnose.load(train(out / f"{run.name}.jsonl", run, steps=60))) for run in RUNS]


def drawn_texts(fig: Figure) -> list[Text]:
    """Every piece of text the figure draws: titles, labels, legend entries, and the tick labels in view."""
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip() and not _is_tick_label(t)]
    for axis in fig.findobj(Axis):
        low, high = sorted(axis.get_view_interval())
        for tick in axis.get_major_ticks():
            if low <= tick.get_loc() <= high and tick.label1.get_visible() and tick.label1.get_text().strip():
                texts.append(tick.label1)
    return texts


def _is_tick_label(text: Text) -> bool:
    return any(
        text is tick.label1 or text is tick.label2
        for axis in text.figure.findobj(Axis)
        for tick in axis.get_major_ticks() + axis.get_minor_ticks()
    )


def overlapping(fig: Figure) -> list[tuple[str, str]]:
    renderer = FigureCanvasAgg(fig).get_renderer()
    texts = drawn_texts(fig)
    boxes = [(t.get_text(), t.get_window_extent(renderer).expanded(0.98, 0.9)) for t in texts]
    return [(a, b) for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2) if box_a.overlaps(box_b)]


def test_no_text_of_the_demo_figures_overlaps_other_text(demo):
    for analysis in demo:
        assert overlapping(figure([analysis])) == []


def test_long_module_names_are_shortened_and_do_not_overlap(long_named):
    fig = figure([long_named])
    assert overlapping(fig) == []
    labels = [t.get_text() for t in drawn_texts(fig)]
    assert any(label.startswith("\N{HORIZONTAL ELLIPSIS}") for label in labels)
    assert all(len(label) <= 28 for label in labels if "projection" in label)


def test_the_heat_map_keeps_its_width_with_long_names(long_named):
    fig = figure([long_named])
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    plot_axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    widths = [ax.get_window_extent(renderer).width for ax in plot_axes]
    assert min(widths) > 0.6 * fig.bbox.width


def test_html_figures_take_the_full_width_and_name_shortened_modules(long_named):
    html = render_html([long_named])
    assert re.search(r"img\.plot \{ width: 100%", html) and 'class="plot"' in html
    assert "model.transformer_encoder_layers.0.attention_output_projection (Linear)" in html


def test_zero_is_drawn_apart_from_not_sampled(long_named):
    ax = next(ax for ax in figure([long_named]).axes if ax.get_ylabel() == "per-layer gradient norm")
    cmap = ax.collections[0].get_cmap()
    assert tuple(cmap.get_under()) != tuple(cmap.get_bad())


def test_the_step_axis_starts_at_the_first_step(demo):
    ax = figure([demo[0]]).axes[0]
    assert ax.get_xlim()[0] == demo[0].run.steps["step"].min()


def test_a_run_that_broke_early_gets_readable_heat_maps(demo):
    broken = next(a for a in demo if a.findings and a.findings[0].code == "NF001")
    fig = figure([broken])
    heat = [ax for ax in fig.axes if ax.get_ylabel().startswith("per-layer")]
    assert heat and all("finite values only at steps" in ax.get_title(loc="right") for ax in heat)
    for ax in heat:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks)
