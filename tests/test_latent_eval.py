"""Beyond-the-paper metrics for E3: Frechet distance vs closed forms, the linear probe on separable
and on independent labels, the classifier on the code against the Bayes accuracy, the independent
image classifier, and the cINN baseline's Bayes' rule."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import multivariate_normal, norm

from replicate.experiments.latent.judges import (
    ImageClassifier,
    classifier_outputs,
    code_classifier_accuracy,
    feature_frechet_distance,
    fit_logistic_regression,
    frechet_distance,
    probe_accuracy,
    train_classifier,
)
from replicate.experiments.latent.models import (
    LatentCINN,
    bayes_log_posterior,
    load_latent_cinn,
    save_latent_cinn,
)
from replicate.experiments.latent.stages import latent_metrics_stage
from replicate.experiments.latent.training import train_latent_cinn
from replicate.training import make_optimizer

torch.set_num_threads(1)


def _random_spd(rng: np.random.Generator, d: int) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return a @ a.T + 0.5 * np.eye(d)


def _psd_sqrt(c: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(c)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


# -- Frechet distance -------------------------------------------------------------------------
def test_frechet_distance_of_diagonal_gaussians_is_the_closed_form() -> None:
    # Commuting covariances: W2^2 = ||m1 - m2||^2 + sum (sqrt(a_i) - sqrt(b_i))^2.
    m1, m2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    a, b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = np.sum((m1 - m2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(m1, np.diag(a), m2, np.diag(b)) == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_of_full_covariances_matches_the_symmetric_form() -> None:
    # Independent route: Tr(C1 + C2 - 2 (C1^1/2 C2 C1^1/2)^1/2), square roots by eigh.
    rng = np.random.default_rng(1)
    c1, c2 = _random_spd(rng, 6), _random_spd(rng, 6)
    m1, m2 = rng.normal(size=6), rng.normal(size=6)
    r1 = _psd_sqrt(c1)
    cross = _psd_sqrt(r1 @ c2 @ r1)
    expected = np.sum((m1 - m2) ** 2) + np.trace(c1) + np.trace(c2) - 2 * np.trace(cross)
    assert frechet_distance(m1, c1, m2, c2) == pytest.approx(expected, rel=1e-8)
    assert frechet_distance(m1, c1, m1, c1) == pytest.approx(0.0, abs=1e-8)


def test_frechet_distance_with_dead_features_matches_the_symmetric_form() -> None:
    # ReLU features with dead units and fewer samples than dimensions: singular covariances.
    rng = np.random.default_rng(9)

    def features(shift: float) -> np.ndarray:
        h = np.maximum(rng.normal(size=(60, 32)) @ rng.normal(size=(32, 32)) * 0.3 + shift, 0)
        h[:, :5] = 0.0
        return h

    a, b = features(0.0), features(0.4)
    m1, c1 = a.mean(0), np.cov(a, rowvar=False)
    m2, c2 = b.mean(0), np.cov(b, rowvar=False)
    r1 = _psd_sqrt(c1)
    root_trace = np.sqrt(np.clip(np.linalg.eigvalsh(r1 @ c2 @ r1), 0, None)).sum()
    expected = np.sum((m1 - m2) ** 2) + np.trace(c1) + np.trace(c2) - 2 * root_trace
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no warning reaches the rule log
        assert feature_frechet_distance(a, b) == pytest.approx(expected, rel=1e-6)


def test_feature_frechet_distance_is_zero_for_identical_features_and_symmetric() -> None:
    rng = np.random.default_rng(2)
    f = rng.normal(size=(300, 8)) @ rng.normal(size=(8, 8))
    g = rng.normal(size=(400, 8)) * 2.0 + 1.0
    assert feature_frechet_distance(f, f) == pytest.approx(0.0, abs=1e-6)
    assert feature_frechet_distance(f, g) == pytest.approx(feature_frechet_distance(g, f), rel=1e-6)


def test_feature_frechet_distance_of_gaussian_samples_approaches_the_closed_form() -> None:
    rng = np.random.default_rng(3)
    c1, c2 = _random_spd(rng, 3), _random_spd(rng, 3)
    m1, m2 = np.zeros(3), np.array([1.0, -1.0, 2.0])
    a = rng.multivariate_normal(m1, c1, size=40_000)
    b = rng.multivariate_normal(m2, c2, size=40_000)
    exact = frechet_distance(m1, c1, m2, c2)
    assert feature_frechet_distance(a, b) == pytest.approx(exact, rel=0.03)


def test_frechet_distance_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="shapes disagree"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


# -- linear probe -----------------------------------------------------------------------------
def test_probe_reaches_one_on_linearly_separable_classes() -> None:
    rng = np.random.default_rng(4)
    y = rng.integers(0, 10, 2000)
    x = 6.0 * np.eye(10)[y] + rng.normal(size=(2000, 10))  # class k far out along axis k
    x = np.hstack([x, rng.normal(size=(2000, 5))])  # plus pure-noise coordinates
    assert probe_accuracy(x[:1000], y[:1000], x[1000:], y[1000:]) >= 0.99


def test_probe_is_at_chance_when_labels_are_independent() -> None:
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(8000, 20)), rng.integers(0, 10, 8000)
    acc = probe_accuracy(x[:4000], y[:4000], x[4000:], y[4000:])
    # 4000 test points: the std of a chance accuracy is sqrt(0.09 / 4000) = 0.005.
    assert abs(acc - 0.10) < 0.025


def test_probe_prediction_matches_the_optimal_linear_rule_on_two_gaussians() -> None:
    # Two unit Gaussians at -1 and +1 in 1-D: the Bayes rule is sign(x), accuracy Phi(1).
    rng = np.random.default_rng(6)
    y = rng.integers(0, 2, 20_000)
    x = (2.0 * y - 1.0)[:, None] + rng.normal(size=(20_000, 1))
    predict = fit_logistic_regression(x[:10_000], y[:10_000], n_classes=2)
    grid = np.linspace(-3, 3, 61)[:, None]
    mismatch = np.mean(predict(grid) != (grid[:, 0] > 0))
    assert mismatch <= 2 / 61  # at most the grid points next to the threshold differ
    acc = np.mean(predict(x[10_000:]) == y[10_000:])
    assert acc == pytest.approx(norm.cdf(1.0), abs=0.015)


def test_code_classifier_separates_a_ring_that_no_linear_probe_can() -> None:
    # Label 1 outside the circle holding half of a standard 2-D Gaussian's mass: the Bayes
    # accuracy is 1, a linear rule's is about 0.5.
    rng = np.random.default_rng(7)
    x = rng.normal(size=(4000, 2))
    y = ((x**2).sum(1) > 2.0 * math.log(2.0)).astype(np.int64)
    split = (x[:3000], y[:3000], x[3000:], y[3000:])
    assert probe_accuracy(*split, n_classes=2) < 0.6
    assert code_classifier_accuracy(*split, n_classes=2) > 0.95


def test_code_classifier_reaches_but_does_not_beat_the_bayes_accuracy() -> None:
    # Two unit Gaussians at -1 and +1: no classifier beats Phi(1) = 0.841 on fresh points.
    rng = np.random.default_rng(8)
    y = rng.integers(0, 2, 8000)
    x = (2.0 * y - 1.0)[:, None] + rng.normal(size=(8000, 1))
    acc = code_classifier_accuracy(x[:4000], y[:4000], x[4000:], y[4000:], n_classes=2)
    # 4000 test points: the std of the accuracy is sqrt(0.84 * 0.16 / 4000) = 0.006.
    assert acc == pytest.approx(norm.cdf(1.0), abs=0.02)


def test_code_classifier_is_reproducible_and_rejects_mismatched_shapes() -> None:
    rng = np.random.default_rng(9)
    x, y = rng.normal(size=(600, 3)), rng.integers(0, 10, 600)
    first = code_classifier_accuracy(x[:400], y[:400], x[400:], y[400:], epochs=2, seed=3)
    assert code_classifier_accuracy(x[:400], y[:400], x[400:], y[400:], epochs=2, seed=3) == first
    with pytest.raises(ValueError, match="disagree"):
        code_classifier_accuracy(x[:400], y[:300], x[400:], y[400:])


# -- the independent classifier ---------------------------------------------------------------
def test_classifier_shapes_and_features_feed_the_head() -> None:
    torch.manual_seed(0)
    clf = ImageClassifier().eval()
    x = torch.rand(5, 1, 28, 28)
    assert clf(x).shape == (5, 10)
    assert torch.allclose(clf.head(clf.features(x)), clf(x))
    images = (x[:, 0] * 255).round().to(torch.uint8).numpy()
    logits, feats = classifier_outputs(clf, images, batch_size=2)
    assert logits.shape == (5, 10) and feats.shape == (5, 128)
    with torch.no_grad():
        direct = clf(torch.as_tensor(images).float().div(255).unsqueeze(1)).numpy()
    np.testing.assert_allclose(logits, direct, atol=1e-5)
    with pytest.raises(ValueError, match="uint8"):
        classifier_outputs(clf, np.zeros((2, 28, 28), np.float32))


def test_one_classifier_step_lowers_the_loss_on_a_tiny_batch() -> None:
    torch.manual_seed(0)
    clf = ImageClassifier()
    x, y = torch.rand(8, 1, 28, 28), torch.arange(8) % 10
    opt = make_optimizer(clf.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    before = loss_fn(clf(x), y)
    opt.zero_grad()
    before.backward()
    opt.step()
    with torch.no_grad():
        after = loss_fn(clf(x), y)
    assert float(after) < float(before.detach())


def test_train_classifier_is_reproducible_and_learns_two_easy_classes() -> None:
    images = np.zeros((32, 28, 28), np.uint8)
    images[16:, :, :14] = 255  # class 1: left half white
    labels = np.repeat([0, 1], 16)
    cfg = {"epochs": 4, "batch_size": 8, "lr": 3e-3}
    m1, s1 = train_classifier(images, labels, cfg, seed=3, progress_every=0)
    m2, s2 = train_classifier(images, labels, cfg, seed=3, progress_every=0)
    assert s1["epoch_loss"] == s2["epoch_loss"]
    assert s1["epoch_loss"][-1] < s1["epoch_loss"][0]
    logits, _ = classifier_outputs(m1, images)
    assert np.mean(logits.argmax(1) == labels) == 1.0


# -- the cINN baseline and Bayes' rule --------------------------------------------------------
def test_bayes_posterior_matches_the_closed_form_for_gaussian_classes() -> None:
    means, sd = torch.tensor([-1.0, 0.5, 2.0], dtype=torch.float64), 0.7
    prior = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)

    def log_likelihood(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(norm.logpdf(x[:, 0].numpy(), means[k].numpy(), sd))

    x = torch.linspace(-3, 4, 15, dtype=torch.float64)[:, None]
    got = bayes_log_posterior(log_likelihood, x, 3, prior.log()).exp().numpy()
    joint = prior.numpy() * norm.pdf(x.numpy(), means.numpy(), sd)
    np.testing.assert_allclose(got, joint / joint.sum(1, keepdims=True), rtol=1e-10)


def _identity_cinn(latent_dim: int = 3) -> LatentCINN:
    """A cINN whose couplings do nothing (s = t = 0): z is a permutation of the standardised u."""
    cinn = LatentCINN(latent_dim=latent_dim, n_blocks=2, hidden=8)
    with torch.no_grad():
        for block in cinn.cinn.network.blocks:
            for subnet in (block.subnet1, block.subnet2):
                subnet[-1].weight.zero_()
                subnet[-1].bias.zero_()
    return cinn.eval()


def test_cinn_log_prob_includes_the_standardisation_and_bayes_falls_back_to_the_prior() -> None:
    cinn = _identity_cinn()
    rng = np.random.default_rng(7)
    u_train = torch.as_tensor(rng.normal([1.0, -2.0, 0.5], [2.0, 0.5, 1.0], (500, 3)).astype("f4"))
    y_train = torch.as_tensor(rng.choice(10, 500, p=np.r_[0.28, [0.08] * 9]))
    cinn.fit_standardization(u_train, y_train)
    u = torch.randn(6, 3)
    mean, std = cinn.u_mean.double().numpy(), cinn.u_std.double().numpy()
    exact = multivariate_normal(mean, np.diag(std**2)).logpdf(u.double().numpy())
    with torch.no_grad():
        got = cinn.log_prob(u, torch.zeros(6, dtype=torch.int64)).double().numpy()
    np.testing.assert_allclose(got, exact, rtol=1e-5)
    # Same likelihood for every class: the posterior is the training label frequency.
    counts = np.bincount(y_train.numpy(), minlength=10)
    np.testing.assert_allclose(
        cinn.classify(u).exp().numpy(), np.tile(counts / counts.sum(), (6, 1)), atol=1e-6
    )


def test_trained_cinn_classifies_separated_clusters_and_samples_them() -> None:
    rng = np.random.default_rng(8)
    centres = 4.0 * rng.normal(size=(10, 4))
    y = rng.integers(0, 10, 2000)
    u = (centres[y] + 0.3 * rng.normal(size=(2000, 4))).astype(np.float32)
    cfg = {"n_blocks": 2, "hidden": 32, "subnet_layers": 2, "clamp": 2.0, "batch_size": 200}
    model, summary = train_latent_cinn(u, y, {**cfg, "lr": 3e-3}, 15, seed=0, progress_every=0)
    assert summary["epoch_loss"][-1] < summary["epoch_loss"][0]
    pred = model.classify(torch.as_tensor(u)).argmax(1).numpy()
    assert np.mean(pred == y) > 0.95
    # Samples of class k land closer to centre k than to any other centre.
    torch.manual_seed(0)
    labels = torch.arange(10).repeat_interleave(20)
    samples = model.sample(labels).numpy()
    nearest = np.linalg.norm(samples[:, None] - centres[None], axis=2).argmin(1)
    assert np.mean(nearest == labels.numpy()) > 0.9


def test_cinn_checkpoint_round_trip_and_encode_inverts_sample(tmp_path) -> None:
    cfg = {"n_blocks": 2, "hidden": 8, "subnet_layers": 2, "clamp": 2.0}
    torch.manual_seed(0)
    model = LatentCINN(latent_dim=4, permutation_seed=5, **cfg)
    model.fit_standardization(torch.randn(50, 4) * 3 + 1, torch.arange(50) % 10)
    save_latent_cinn(tmp_path / "c.safetensors", model, cfg, seed=5)
    loaded = load_latent_cinn(tmp_path / "c.safetensors", cfg)
    u, labels = torch.randn(7, 4), torch.arange(7)
    torch.testing.assert_close(loaded.log_prob(u, labels), model.log_prob(u, labels))
    z = torch.randn(7, 4)
    torch.testing.assert_close(
        loaded.encode(loaded.sample(labels, z=z), labels), z, atol=1e-4, rtol=0
    )


# -- the table ----------------------------------------------------------------------------------
def test_metrics_table_means_stds_and_order(tmp_path) -> None:
    rows = []
    for seed, (a_ours, a_cinn) in enumerate([(0.97, 0.95), (0.99, 0.93)]):
        for model, acc in (("cinn", a_cinn), ("ours", a_ours)):
            rows.append(
                {
                    "dataset": "mnist",
                    "model": model,
                    "seed": seed,
                    "test_accuracy": acc,
                    "sample_accuracy": 0.9,
                    "frechet_distance": 2.0 + seed,
                    "label_probe_accuracy": 0.1,
                }
            )
    paths = []
    for i, row in enumerate(rows):
        paths.append(tmp_path / f"{i}.json")
        paths[-1].write_text(json.dumps(row))
    ref = {"dataset": "mnist", "model": "real train images", "sample_accuracy": 0.99}
    paths.append(tmp_path / "ref.json")
    paths[-1].write_text(json.dumps({"rows": [{**ref, "frechet_distance": 0.1}]}))
    table = latent_metrics_stage(paths, tmp_path / "t.csv", tmp_path / "t.md")
    assert table["model"].tolist() == [
        "ours (forward pass)",
        "cINN (Bayes' rule)",
        "reference: real train images",
    ]
    ours = table.iloc[0]
    assert ours["test_accuracy_mean"] == pytest.approx(0.98)
    assert ours["test_accuracy_std"] == pytest.approx(np.std([0.97, 0.99], ddof=1))
    assert ours["frechet_distance_mean"] == pytest.approx(2.5)
    assert ours["n_seeds"] == 2 and ours["chance_accuracy"] == pytest.approx(0.1)
    assert math.isnan(table.iloc[2]["test_accuracy_mean"])
    assert len(pd.read_csv(tmp_path / "t.csv")) == 3
    md = (tmp_path / "t.md").read_text()
    assert "0.9800 ± 0.0141" in md and "reference: real train images" in md
