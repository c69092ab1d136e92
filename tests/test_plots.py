"""replicate.plots and the mixture's figures: files written atomically, panels as specified,
diverged runs marked instead of crashing."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from replicate import plots
from replicate.experiments.gmm import figures as gmm_figures


def test_save_figure_writes_png_and_pdf_and_leaves_no_temp_files(tmp_path: Path) -> None:
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    out = tmp_path / "nested" / "fig.png"
    plots.save_figure(fig, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.with_suffix(".pdf").read_bytes()[:5] == b"%PDF-"
    assert sorted(p.name for p in out.parent.iterdir()) == ["fig.pdf", "fig.png"]
    assert not plt.get_fignums()  # the figure was closed
    with pytest.raises(ValueError, match=r"\.png"):
        plots.save_figure(plt.figure(), tmp_path / "fig.pdf")


def test_scatter_uses_label_colours_and_the_square_axes() -> None:
    plots.use_style()
    fig, ax = plt.subplots()
    xy = np.array([[0.0, 0.0], [1.0, 1.0], [-1.0, 2.0]])
    labels = np.array([2, 0, 2])
    plots.scatter_labels(ax, xy, labels, 8, circles=np.zeros((1, 2)), radius=0.6)
    colours = ax.collections[0].get_facecolors()[:, :3]
    palette = np.array(plots.label_colors(8))
    # Drawing order is shuffled; match every drawn point to its label's colour by position.
    offsets = ax.collections[0].get_offsets()
    for point, colour in zip(offsets, colours, strict=True):
        k = labels[np.flatnonzero((xy == point).all(axis=1))[0]]
        assert np.allclose(colour, palette[k])
    assert ax.get_xlim() == (-3.0, 3.0) and ax.get_ylim() == (-3.0, 3.0)
    assert len(ax.patches) == 1  # the mode ring
    with pytest.raises(ValueError, match="labels must lie"):
        plots.scatter_labels(ax, xy, np.array([0, 1, 9]), 8)
    plt.close(fig)


def test_figure_panels_marks_diverged_panels() -> None:
    xy, lab = np.zeros((5, 2)), np.arange(5)
    fig = plots.figure_panels(
        [plots.Panel("a", xy, lab), plots.Panel("b", None, None, "NaN at iteration 3")], 8
    )
    texts = [[t.get_text() for t in ax.texts] for ax in fig.axes]
    assert texts[0] == [] and texts[1][0].startswith("diverged")
    assert "NaN at iteration 3" in texts[1][0]
    plt.close(fig)


def _history(tmp_path: Path, model: str, seed: int, frame: pd.DataFrame, **status) -> tuple:
    csv, js = tmp_path / f"{model}_{seed}.csv", tmp_path / f"{model}_{seed}.json"
    frame.to_csv(csv, index=False)
    js.write_text(json.dumps({"model": model, "seed": seed, "diverged": False, **status}))
    return csv, js


def test_training_curves_are_the_recorded_histories_with_ramp_and_divergence(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(0)
    n = 40
    ramp = np.where(np.arange(n) >= 24, 1.0, 0.1)  # the ramp reaches 1 at iteration 24
    inn = pd.DataFrame(
        {"iteration": range(n), "loss": rng.uniform(1, 9, n), "y": rng.uniform(0.1, 1, n)}
        | {"z": rng.uniform(0.01, 0.1, n), "x_backward": rng.uniform(1e-3, 1, n), "ramp": ramp}
    )
    ours = [pd.DataFrame({"iteration": range(n), "loss": rng.normal(-1, 0.1, n)}) for _ in "ab"]
    diverged = ours[1].iloc[:17]  # seed 1 diverged after 17 iterations
    runs = [
        _history(tmp_path, "inn_full", 0, inn),
        _history(tmp_path, "ours", 0, ours[0]),
        _history(tmp_path, "ours", 1, diverged, diverged=True, iterations_done=17),
    ]
    fig = gmm_figures.training_curves_figure(
        [c for c, _ in runs], [j for _, j in runs], "reference", "all"
    )
    inn_ax, ours_ax = fig.axes[:2]
    by_label = {line.get_label(): line for line in inn_ax.lines}
    np.testing.assert_array_equal(by_label["x_backward"].get_ydata(), inn["x_backward"])
    np.testing.assert_array_equal(by_label["ramp reaches 1"].get_xdata(), [24, 24])
    assert inn_ax.get_yscale() == "log" and ours_ax.get_yscale() == "linear"
    nll = [line for line in ours_ax.lines if len(line.get_ydata()) > 2]
    assert [len(line.get_ydata()) for line in nll] == [40, 17]
    np.testing.assert_array_equal(nll[1].get_ydata(), diverged["loss"])
    crosses = [line for line in ours_ax.lines if line.get_label() == "diverged"]
    assert len(crosses) == 1 and list(crosses[0].get_xdata()) == [17]
    plt.close(fig)
