"""replicate.experiments.gmm.evaluation: every number of an evaluation recomputed from its files or
independently, and a diverged run reported as such."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from replicate.experiments.gmm import evaluation as gmm_eval
from replicate.experiments.gmm import stages as gmm_stages
from replicate.experiments.gmm.problem import GaussianMixture
from replicate.metrics import in_mode_fraction, wasserstein2


def test_evaluate_exact_numbers_are_recomputable_from_its_files(tmp_path: Path) -> None:
    cfg = {"n_test": 300, "n_posterior_samples": 200}
    paths = [tmp_path / n for n in ("e.json", "s.csv", "p.csv")]
    result = gmm_stages.evaluate_exact("some", cfg, 1, *paths)
    gm = GaussianMixture("some")
    samples, preds = pd.read_csv(paths[1]), pd.read_csv(paths[2])
    assert list(samples.columns) == ["x1", "x2", "label"]
    assert samples.groupby("label").size().tolist() == [200] * gm.n_labels
    assert list(preds.columns) == ["x1", "x2", "label", "predicted"]
    # Recompute from the CSVs alone: accuracy, in-mode fraction, W2 against a fresh reference.
    assert (preds["label"] == preds["predicted"]).mean() == pytest.approx(result["accuracy"])
    frac = in_mode_fraction(
        samples[["x1", "x2"]].to_numpy(),
        samples["label"].to_numpy(),
        gm.means,
        gm.mode_labels,
        gm.std,
    )
    assert frac == pytest.approx(result["in_mode_fraction"])
    gen = torch.Generator().manual_seed(gmm_eval.REFERENCE_SEED_OFFSET + 1)
    ref = {k: gm.sample_conditional(k, 200, gen) for k in range(gm.n_labels)}
    w2 = np.mean(
        [
            wasserstein2(samples.loc[samples.label == k, ["x1", "x2"]].to_numpy(), ref[k])
            for k in range(gm.n_labels)
        ]
    )
    assert w2 == pytest.approx(result["w2"])
    # The exact posterior's NLL is the true NLL, and its classifier is near the Bayes rate.
    assert result["nll"] == result["true_nll"]
    assert abs(result["accuracy"] - result["bayes_accuracy"]) < 0.05
    saved = json.loads(paths[0].read_text())
    assert saved["w2"] == pytest.approx(result["w2"]) and saved["diverged"] is False


def test_diverged_run_gives_nan_metrics_empty_samples_and_a_diverged_figure(
    tmp_path: Path,
) -> None:
    status = tmp_path / "status.json"
    status.write_text(
        json.dumps({"diverged": True, "message": "training diverged at iteration 3: NaN"})
    )
    out = [tmp_path / n for n in ("e.json", "s.csv", "p.csv")]
    cfg = {"n_test": 50, "n_posterior_samples": 10}
    result = gmm_stages.evaluate_gmm_run(
        "inn_full", tmp_path / "missing.safetensors", status, cfg, "all", 0, "cpu", *out
    )
    assert result["diverged"] and math.isnan(result["accuracy"]) and math.isnan(result["w2"])
    saved = json.loads(out[0].read_text())  # strict JSON: NaN is written as null
    assert saved["accuracy"] is None and saved["diverged"] is True
    assert len(pd.read_csv(out[1])) == 0 and list(pd.read_csv(out[1]).columns) == [
        "x1",
        "x2",
        "label",
    ]
    png = tmp_path / "fig.png"
    gmm_stages.plot_fig5_1(out[2], out[1], out[0], png)
    assert png.exists() and png.with_suffix(".pdf").exists()
    # The table counts it as diverged and keeps it out of the means.
    exact = [tmp_path / f"x{s}.json" for s in (0, 1)]
    for s, p in enumerate(exact):
        gmm_stages.evaluate_exact("all", cfg, s, p, tmp_path / "xs.csv", tmp_path / "xp.csv")
    table = gmm_stages.gmm_metrics_table([*exact, out[0]], tmp_path / "t.csv", tmp_path / "t.md")
    row = table.set_index("model").loc["inn_full"]
    assert row["n_seeds"] == 1 and row["n_diverged"] == 1 and math.isnan(row["accuracy_mean"])
    exact_row = table.set_index("model").loc["exact"]
    accs = [json.loads(p.read_text())["accuracy"] for p in exact]
    assert exact_row["accuracy_mean"] == pytest.approx(np.mean(accs))
    assert exact_row["accuracy_std"] == pytest.approx(np.std(accs, ddof=1))
    assert list(table["model"]) == ["exact", "inn_full"]
    assert "n/a" in (tmp_path / "t.md").read_text()


TINY = {
    "n_train": 512,
    "batch_size": 64,
    "iterations": 10,
    "n_test": 100,
    "n_posterior_samples": 64,
    "network": {"n_blocks": 2, "hidden": 16, "subnet_layers": 3, "clamp": 2.0},
    "ours": {"latent_dim": 2, "eps": 0.1, "sigma": 0.05, "optimizer": {"lr": 3e-3}},
    "cinn": {"optimizer": {"lr": 3e-3}},
}


@pytest.mark.parametrize("model", ["ours", "cinn"])
def test_evaluate_trained_run_matches_an_independent_recomputation(
    tmp_path: Path, model: str
) -> None:
    from replicate.experiments.gmm.training import load_gmm_model
    from replicate.training import TrainingFiles

    torch.set_num_threads(1)
    ckpt, status = tmp_path / "m.safetensors", tmp_path / "m.json"
    gmm_stages.train_gmm_model(model, TINY, "all", 0, TrainingFiles(ckpt, status), progress_every=0)
    out = [tmp_path / n for n in ("e.json", "s.csv", "p.csv")]
    result = gmm_stages.evaluate_gmm_run(model, ckpt, status, TINY, "all", 0, "cpu", *out)
    assert not result["diverged"] and result["has_log_prob"]
    # Recompute accuracy and NLL with the model itself on the same held-out points.
    x, y = gmm_eval.held_out_set("all", TINY["n_test"], 0)
    m = load_gmm_model(model, ckpt, TINY, "all", "cpu")
    predicted = m.predict(x)[:, :8].argmax(1)
    assert float((predicted == y).float().mean()) == pytest.approx(result["accuracy"])
    assert pd.read_csv(out[2])["predicted"].tolist() == predicted.tolist()
    nll = -float(m.log_prob(x, GaussianMixture("all").one_hot(y)).mean())
    assert nll == pytest.approx(result["nll"], rel=1e-5)
    assert result["nll"] > result["true_nll"] - 0.5  # cannot beat the truth by much on 100 points
    # Model sampling is seeded: a second evaluation writes identical samples.
    again = [tmp_path / n for n in ("e2.json", "s2.csv", "p2.csv")]
    gmm_stages.evaluate_gmm_run(model, ckpt, status, TINY, "all", 0, "cpu", *again)
    pd.testing.assert_frame_equal(pd.read_csv(out[1]), pd.read_csv(again[1]))
    assert pd.read_csv(out[1]).groupby("label").size().tolist() == [64] * 8
