"""The latent conditional flow: its round trip through the standardisation and the invertible
network, safe save/load, that it learns to classify separable latents, a resumed run equal to an
uninterrupted one, the sample layouts behind Figures 5.3/5.4, and Table 1 on hand-made numbers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import killed_after_checkpoints

import replicate.experiments.latent.evaluation as latent_evaluation
import replicate.experiments.latent.stages as latent_stages
from replicate.checkpoints import CheckpointMismatch
from replicate.experiments.latent.autoencoder import AutoEncoder
from replicate.experiments.latent.evaluation import (
    evaluate_latent_flow,
    sample_images,
    style_images,
    table1,
)
from replicate.experiments.latent.models import LatentFlow, load_latent_flow, save_latent_flow
from replicate.experiments.latent.stages import table1_stage
from replicate.experiments.latent.training import train_latent_cinn, train_latent_flow
from replicate.metrics import accuracy

torch.set_num_threads(1)

FLOW_CFG = {
    "n_blocks": 2,
    "hidden": 32,
    "subnet_layers": 3,
    "clamp": 2.0,
    "eps": 0.1,
    "sigma": 0.05,
    "epochs": 15,
    "batch_size": 100,
    "lr": 3e-3,
}


def _clusters(n: int, dim: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Ten well separated Gaussian clusters, off-centre and badly scaled like raw latents."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4.0, size=(10, dim))
    labels = rng.integers(0, 10, n)
    u = 7.0 + 3.0 * (centres[labels] + 0.3 * rng.normal(size=(n, dim)))
    return u.astype(np.float32), labels.astype(np.int64)


def _flow(seed: int = 0, dim: int = 6) -> LatentFlow:
    torch.manual_seed(seed)
    keys = ("eps", "sigma", "n_blocks", "hidden", "subnet_layers", "clamp")
    flow = LatentFlow(dim, 10, **{k: FLOW_CFG[k] for k in keys}, permutation_seed=seed)
    flow.u_standardization.set(torch.linspace(-2, 3, dim), torch.linspace(0.5, 4, dim))
    return flow.eval()


def test_dimensions_follow_the_paper() -> None:
    flow = LatentFlow(latent_dim=20, n_classes=10)
    # [u (20), x0 (10)] <-> [z (20), y_hat (10)], noise levels 0.1 and 0.05.
    assert flow.flow.data_dim == 20 and flow.flow.pad_dim == 10
    assert flow.flow.latent_dim == 20 and flow.flow.condition_dim == 10
    assert (flow.flow.eps, flow.flow.sigma) == (0.1, 0.05)
    assert flow.flow.network.dim == 30 and len(flow.flow.network.blocks) == 4


def test_sample_is_the_exact_inverse_of_the_forward_pass() -> None:
    flow = _flow()
    labels = torch.tensor([0, 3, 9, 3])
    z = torch.randn(4, 6)
    torch.manual_seed(5)
    u = flow.sample(labels, z=z)
    # Recompute by hand: the same label noise, the network inverse, then un-standardise.
    torch.manual_seed(5)
    c_hat = torch.eye(10)[labels] + 0.1 * torch.randn(4, 10)
    with torch.no_grad():
        padded = flow.flow.network.inverse(torch.cat([z, c_hat], 1))
        assert torch.allclose(u, padded[:, :6] * flow.u_std + flow.u_mean, atol=1e-5)
        # ...and forwards again: the padded point maps back onto [z, c_hat].
        out, _ = flow.flow.network(padded)
    assert torch.allclose(out, torch.cat([z, c_hat], 1), atol=1e-4)


def test_predict_and_encode_read_the_forward_pass_of_standardised_latents() -> None:
    flow = _flow()
    u = torch.randn(5, 6) * 3 + 1
    x = (u - flow.u_mean) / flow.u_std
    with torch.no_grad():
        out, _ = flow.flow.network(torch.cat([x, torch.zeros(5, 10)], 1))
    assert torch.allclose(flow.predict(u), out[:, 6:], atol=1e-6)
    assert torch.allclose(flow.encode(u), out[:, :6], atol=1e-6)


def test_nll_is_the_conditional_flow_loss_of_standardised_latents() -> None:
    flow = _flow()
    u, y = torch.randn(4, 6), torch.tensor([1, 2, 3, 4])
    torch.manual_seed(0)
    got = flow.nll(u, y)
    torch.manual_seed(0)
    want = flow.flow.nll((u - flow.u_mean) / flow.u_std, torch.eye(10)[y])
    assert torch.allclose(got, want)
    with pytest.raises(ValueError, match="0..9"):
        flow.nll(u, torch.tensor([1, 2, 3, 10]))


def test_save_load_round_trip(tmp_path: Path) -> None:
    flow = _flow(seed=3)
    path = tmp_path / "flow_seed3.safetensors"
    save_latent_flow(path, flow, FLOW_CFG, latent_dim=6, seed=3)
    loaded = load_latent_flow(path, FLOW_CFG)
    u = torch.randn(7, 6)
    assert torch.equal(loaded.predict(u), flow.predict(u))
    assert torch.equal(loaded.u_std, flow.u_std)
    z, labels = torch.randn(3, 6), torch.tensor([0, 1, 2])
    torch.manual_seed(1)
    a = loaded.sample(labels, z=z)
    torch.manual_seed(1)
    assert torch.equal(a, flow.sample(labels, z=z))
    with pytest.raises(CheckpointMismatch):
        load_latent_flow(path, {**FLOW_CFG, "hidden": 16})


def test_training_learns_to_classify_separable_latents() -> None:
    u, y = _clusters(1000)
    model, summary = train_latent_flow(u, y, FLOW_CFG, seed=0, progress_every=0)
    assert summary["epoch_loss"][-1] < summary["epoch_loss"][0]
    # The standardisation is the training data's.
    np.testing.assert_allclose(model.u_mean.numpy(), u.mean(0), rtol=1e-4)
    test_u, test_y = _clusters(1500, seed=0)
    result = evaluate_latent_flow(model, test_u[1000:], test_y[1000:])
    assert result["accuracy"] > 0.9
    scores = model.predict(torch.as_tensor(test_u[1000:])).numpy()
    assert result["accuracy"] == accuracy(scores, test_y[1000:])
    # (Sample quality needs far longer training than a unit test affords; the sampling maths
    # is checked exactly in test_sample_is_the_exact_inverse_of_the_forward_pass.)


@pytest.mark.parametrize("model", ["flow", "cinn"])
def test_killed_and_resumed_training_equals_an_uninterrupted_run(
    tmp_path: Path, model: str
) -> None:
    """Both latent models train through one loop: a job killed after an epoch's checkpoint
    resumes to the weights and losses of an uninterrupted run (the cINN's rule books hours too)."""
    u, y = _clusters(300)
    cfg = {**FLOW_CFG, "epochs": 3}

    def train(**kw):
        if model == "flow":
            return train_latent_flow(u, y, cfg, seed=2, progress_every=0, **kw)
        return train_latent_cinn(u, y, cfg, epochs=3, seed=2, progress_every=0, **kw)

    reference, ref_summary = train()
    ckpt = tmp_path / "last.safetensors"
    with killed_after_checkpoints(2):  # right after epoch 2's checkpoint
        train(checkpoint_path=ckpt)
    resumed, summary = train(checkpoint_path=ckpt)
    assert summary["resumed_after_epoch"] == 2 and ref_summary["resumed_after_epoch"] == 0
    assert summary["epoch_loss"] == ref_summary["epoch_loss"]
    for (name, a), b in zip(
        reference.state_dict().items(), resumed.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    assert ckpt.exists(), "kept until the stage has written the model (latent_model_stage)"


def test_sample_layouts_for_figures_5_3_and_5_4(tmp_path: Path) -> None:
    flow, ae = _flow(dim=4), AutoEncoder(4).eval()
    images, labels = sample_images(flow, ae, n_per_class=3, seed=0)
    assert images.shape == (30, 28, 28) and images.dtype == np.uint8
    assert labels.tolist() == [k for k in range(10) for _ in range(3)]
    np.testing.assert_array_equal(images, sample_images(flow, ae, 3, seed=0)[0])

    grid, z = style_images(flow, ae, n_rows=2, seed=0)
    assert grid.shape == (2, 10, 28, 28) and z.shape == (2, 4)
    # Row r, column k is the decoded sample of label k from row r's z (the same label noise).
    torch.manual_seed(0)
    torch.randn(2, 4)  # the z draw
    u = flow.sample(torch.arange(10).repeat(2), z=torch.as_tensor(z).repeat_interleave(10, 0))
    want = latent_evaluation.decode_to_uint8(ae, u).reshape(2, 10, 28, 28)
    np.testing.assert_array_equal(grid, want)

    # Figure 5.3 takes the first n of each class from the npz.
    npz = tmp_path / "samples.npz"
    np.savez(npz, images=images, labels=labels)
    latent_stages.fig5_3_stage(npz, "mnist", 2, tmp_path / "fig.png")
    assert (tmp_path / "fig.png").is_file() and (tmp_path / "fig.pdf").is_file()
    with pytest.raises(ValueError, match="fewer than 4"):
        latent_stages.fig5_3_stage(npz, "mnist", 4, tmp_path / "fig2.png")


def test_classification_accuracy_on_a_hand_made_case() -> None:
    scores = np.array([[0.9, 0.1, 0.0], [0.1, 0.2, 0.7], [0.3, 0.6, 0.1], [0.5, 0.4, 0.1]])
    assert accuracy(scores, np.array([0, 2, 1, 1])) == 0.75


def test_table1_on_a_hand_made_case(tmp_path: Path) -> None:
    paths = []
    for dataset, accs in (("mnist", [0.97, 0.99]), ("fashion_mnist", [0.9, 0.88, 0.86])):
        for seed, acc in enumerate(accs):
            p = tmp_path / f"{dataset}_{seed}.json"
            p.write_text(json.dumps({"dataset": dataset, "seed": seed, "accuracy": acc}))
            paths.append(p)
    frame = table1_stage(paths, tmp_path / "t.csv", tmp_path / "t.md")
    assert list(frame.columns) == [
        "dataset",
        "accuracy_mean",
        "accuracy_std",
        "n_seeds",
        "paper_accuracy",
    ]
    rows = frame.set_index("dataset")
    assert rows.loc["mnist", "accuracy_mean"] == pytest.approx(0.98)
    assert rows.loc["mnist", "accuracy_std"] == pytest.approx(math.sqrt(2 * 0.01**2))
    assert rows.loc["fashion_mnist", "accuracy_std"] == pytest.approx(0.02)
    assert rows.loc["fashion_mnist", "n_seeds"] == 3
    assert rows.loc["mnist", "paper_accuracy"] == 0.984
    assert rows.loc["fashion_mnist", "paper_accuracy"] == 0.901
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "t.csv"), frame)
    markdown = (tmp_path / "t.md").read_text()
    assert "| mnist" in markdown and "0.9800 ± 0.0141" in markdown
    # One seed: the std is undefined (NaN), as in every table (replicate.metrics.summarise), and
    # the Markdown shows the accuracy alone.
    one = table1({"mnist": [0.5]})
    assert one.accuracy_mean.tolist() == [0.5] and math.isnan(one.accuracy_std.iloc[0])
    table1_stage(paths[:1], tmp_path / "one.csv", tmp_path / "one.md")
    one_md = (tmp_path / "one.md").read_text()
    assert "0.9700" in one_md and "nan" not in one_md.lower()


def test_config_checks_name_the_latent_key() -> None:
    from replicate.config import ConfigError, check_config

    with pytest.raises(ConfigError, match="latent.n_samples_per_class"):
        check_config({"latent": {"n_samples_per_class": 30, "n_eval_samples_per_class": 20}})
    with pytest.raises(ConfigError, match="latent.flow.batch_size"):
        check_config({"latent": {"n_train": 100, "flow": {"batch_size": 256}}})
    check_config({"latent": {"n_train": None, "autoencoder": {"batch_size": 256}}})


def test_evaluation_is_reproducible_and_leaves_the_global_generator_alone() -> None:
    flow = LatentFlow(latent_dim=3, n_blocks=1, hidden=4)
    u = np.random.default_rng(0).normal(size=(50, 3)).astype(np.float32)
    y = np.arange(50) % 10
    state = torch.random.get_rng_state()
    first = evaluate_latent_flow(flow, u, y, seed=3)
    assert torch.equal(state, torch.random.get_rng_state())
    torch.rand(7)  # whatever ran before must not matter
    assert evaluate_latent_flow(flow, u, y, seed=3) == first
    assert evaluate_latent_flow(flow, u, y, seed=4)["nll"] != first["nll"]


def test_training_curves_stage_draws_the_recorded_epoch_losses(tmp_path, monkeypatch) -> None:
    import json

    import matplotlib.pyplot as plt

    from replicate import plots
    from replicate.experiments.latent.stages import training_curves_stage

    (tmp_path / "ae.json").write_text(json.dumps({"epoch_loss": [0.05, 0.02, 0.01]}))
    paths = []
    for model, seed, losses in (
        ("ours", 0, [3.0, 2.0]),
        ("ours", 1, [3.5, 2.5]),
        ("cinn", 0, [4.0, 1.0]),
    ):
        paths.append(tmp_path / f"{model}{seed}.json")
        paths[-1].write_text(json.dumps({"model": model, "seed": seed, "epoch_loss": losses}))
    shown = {}
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: shown.update(fig=fig))
    training_curves_stage(tmp_path / "ae.json", paths, "mnist", tmp_path / "t.png")
    ae, ours, cinn = shown["fig"].axes[:3]
    assert [list(line.get_ydata()) for line in ae.lines] == [[0.05, 0.02, 0.01]]
    assert [list(line.get_ydata()) for line in ours.lines] == [[3.0, 2.0], [3.5, 2.5]]
    assert [list(line.get_xdata()) for line in cinn.lines] == [[1, 2]]
    assert ae.get_yscale() == "log"
    plt.close(shown["fig"])  # save_figure would have closed it; later tests count open figures
