"""Joint training of the auto-encoder and the flow (replicate.experiments.latent.joint, issue 29)
and the ablation table that sets it next to the pretrained pipeline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from helpers import SMOKE_CONFIG, killed_after_checkpoints

from replicate.checkpoints import CheckpointMismatch
from replicate.config import ConfigError, check_config
from replicate.experiments.latent.joint import (
    JointLatentFlow,
    _model_kwargs,
    joint_training_setup,
    load_joint,
    recalibrate_batch_norm,
    save_joint,
    train_joint,
)
from replicate.experiments.latent.stages import ablation_table_stage
from replicate.training import segment_seed

FLOW = {"n_blocks": 1, "hidden": 8, "subnet_layers": 2, "clamp": 2.0, "eps": 0.1, "sigma": 0.05}
CONFIG = {
    "autoencoder": {"latent_dim": 3},
    "flow": FLOW,
    "joint": {"batch_size": 8, "lr": 1e-3, "epochs": 3},
}
STOP = {"stop_gradient": True, "nll_weight": 1.0}
THROUGH = {"stop_gradient": False, "nll_weight": 0.5}
GLF = {"flow_betas": [0.8, 0.9], "flow_eps": 1e-6, "flow_weight_decay": 2e-5}
# GLF's optimisation, its halving brought forward to every epoch so that a short run sees it.
THROUGH_GLF = THROUGH | {"glf_optimizer": GLF | {"lr_halving_epochs": 1}}


def _data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 28, 28)).astype(np.uint8), rng.integers(0, 10, n)


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return torch.rand(6, 1, 28, 28), torch.tensor([0, 1, 2, 3, 4, 5])


def _model(variant: dict) -> JointLatentFlow:
    torch.manual_seed(0)
    return JointLatentFlow(latent_dim=3, n_blocks=1, hidden=8, **variant).train()


def test_reconstruction_term_is_glfs_summed_squared_error() -> None:
    """GLF: nn.MSELoss(reduction="sum") divided by the batch size."""
    model, (images, labels) = _model(STOP), _batch()
    terms = model.loss_terms(images, labels)
    model.autoencoder.train()  # BatchNorm in training mode, as in the step
    expected = torch.nn.functional.mse_loss(
        model.autoencoder(images), images, reduction="sum"
    ) / len(images)
    assert torch.allclose(terms["reconstruction"], expected, rtol=1e-5)


def test_loss_is_reconstruction_plus_weighted_nll() -> None:
    model, (images, labels) = _model(THROUGH), _batch()
    torch.manual_seed(1)  # the padding noise
    terms = model.loss_terms(images, labels)
    assert torch.allclose(terms["loss"], terms["reconstruction"] + 0.5 * terms["nll"])


@pytest.mark.parametrize("variant", [STOP, THROUGH], ids=["stop_gradient", "nll_through"])
def test_the_nll_reaches_the_encoder_only_without_the_stop_gradient(variant: dict) -> None:
    model, (images, labels) = _model(variant), _batch()
    model.loss_terms(images, labels)["nll"].backward()
    encoder = [p.grad for p in model.autoencoder.encoder.parameters()]
    decoder = [p.grad for p in model.autoencoder.decoder.parameters()]
    assert all(g is None for g in decoder), "the NLL never touches the decoder"
    if variant["stop_gradient"]:
        assert all(g is None for g in encoder)
    else:
        assert all(g is not None for g in encoder)
        assert sum(float(g.abs().sum()) for g in encoder) > 0


def test_with_the_stop_gradient_the_flow_gets_the_gradient_of_a_flow_on_frozen_codes() -> None:
    """Against an independent computation: the flow alone (LatentFlow.loss_terms) on the
    encoder's codes computed apart and detached; same padding noise."""
    model, (images, labels) = _model(STOP), _batch()
    torch.manual_seed(3)
    model.loss_terms(images, labels)["loss"].backward()
    joint_grads = [p.grad.clone() for p in model.flow.parameters()]
    model.zero_grad()
    with torch.no_grad():
        codes = model.autoencoder.encoder(images)
    torch.manual_seed(3)
    model.flow.loss_terms(codes, labels)["loss"].backward()
    for a, b in zip(joint_grads, (p.grad for p in model.flow.parameters()), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("variant", [THROUGH, THROUGH_GLF], ids=["adam", "glf_optimizer"])
def test_killed_and_resumed_joint_training_equals_an_uninterrupted_run(
    tmp_path: Path, variant: dict
) -> None:
    images, labels = _data(16)
    reference, ref_summary = train_joint(images, labels, CONFIG, variant, 1, progress_every=0)
    ckpt = tmp_path / "last.safetensors"
    with killed_after_checkpoints(1):
        train_joint(images, labels, CONFIG, variant, 1, checkpoint_path=ckpt, progress_every=0)
    resumed, summary = train_joint(
        images, labels, CONFIG, variant, 1, checkpoint_path=ckpt, progress_every=0
    )
    assert summary["resumed_after_epoch"] == 1
    assert summary["epoch_reconstruction"] == ref_summary["epoch_reconstruction"]
    for (name, a), b in zip(
        reference.state_dict().items(), resumed.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name


def test_glf_optimizer_gives_the_flow_its_own_adam_and_halves_both_rates_on_schedule() -> None:
    """Every parameter in exactly one group, the flow's with GLF's settings; and against torch's
    Adam built by hand as GLF builds its two (auto-encoder: defaults; flow: its betas, eps and
    weight decay), with both rates halved by hand at each epoch's start, training ends on the
    same weights."""
    images, labels = _data(16)
    setup, batches = joint_training_setup(images, labels, CONFIG, THROUGH_GLF, seed=2)
    groups = setup.optimizer.param_groups
    grouped = [id(p) for group in groups for p in group["params"]]
    assert sorted(grouped) == sorted(id(p) for p in setup.model.parameters())
    assert groups[1]["betas"] == (0.8, 0.9) and groups[1]["weight_decay"] == 2e-5
    assert [setup.lr_factor(k) for k in range(3)] == [1.0, 0.5, 0.25]

    trained, _ = train_joint(images, labels, CONFIG, THROUGH_GLF, 2, progress_every=0)
    torch.manual_seed(2)
    model = JointLatentFlow(**_model_kwargs(CONFIG, THROUGH_GLF, 2)).train()
    autoencoder = torch.optim.Adam(model.autoencoder.parameters(), lr=1e-3)
    flow = torch.optim.Adam(
        model.flow.parameters(), lr=1e-3, betas=(0.8, 0.9), eps=1e-6, weight_decay=2e-5
    )
    x = torch.as_tensor(images, dtype=torch.float32)[:, None] / 255
    y = torch.as_tensor(labels)
    for i in range(CONFIG["joint"]["epochs"] * batches.per_epoch):
        if i % batches.per_epoch == 0:
            torch.manual_seed(segment_seed(2, i // batches.per_epoch))
            for adam in (autoencoder, flow):
                adam.param_groups[0]["lr"] = 1e-3 * 0.5 ** (i // batches.per_epoch)
        rows = batches(i)
        loss = model.loss_terms(x[rows], y[rows])["loss"]
        autoencoder.zero_grad()
        flow.zero_grad()
        loss.backward()
        autoencoder.step()
        flow.step()
    recalibrate_batch_norm(model.autoencoder, images)
    for (name, a), b in zip(trained.state_dict().items(), model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, msg=name)


def test_training_lowers_both_terms_and_same_seed_gives_same_weights() -> None:
    images, labels = _data(32)
    config = {**CONFIG, "joint": {**CONFIG["joint"], "epochs": 4}}
    model, summary = train_joint(images, labels, config, THROUGH, 0, progress_every=0)
    again, _ = train_joint(images, labels, config, THROUGH, 0, progress_every=0)
    assert summary["epoch_reconstruction"][-1] < summary["epoch_reconstruction"][0]
    assert summary["epoch_nll"][-1] < summary["epoch_nll"][0]
    for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_same_seed_gives_the_same_weights_on_two_threads() -> None:
    """The pipeline's training rules run on 2 threads (CI's smoke run caps them at one,
    tests/helpers.py): two trainings of the joint model (convolutions, BatchNorm, linear layers,
    coupling blocks) on 2 threads agree bit for bit."""
    images, labels = _data(64)
    config = {**CONFIG, "joint": {**CONFIG["joint"], "batch_size": 32, "epochs": 1}}
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        model, _ = train_joint(images, labels, config, THROUGH, 0, progress_every=0)
        again, _ = train_joint(images, labels, config, THROUGH, 0, progress_every=0)
    finally:
        torch.set_num_threads(previous)
    for (name, a), b in zip(model.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_trained_model_has_the_batch_norm_statistics_of_its_training_images() -> None:
    """After training, the encoder's first BatchNorm holds the mean and variance of its input
    features over all training images under the final weights, computed here directly; the
    running averages of training would trail them."""
    images, labels = _data(32)
    model, _ = train_joint(images, labels, CONFIG, THROUGH, 0, progress_every=0)
    encoder = model.autoencoder.encoder
    with torch.no_grad():
        features = encoder[:3](torch.as_tensor(images, dtype=torch.float32)[:, None] / 255)
    bn = encoder[3]
    assert isinstance(bn, torch.nn.BatchNorm2d)
    torch.testing.assert_close(bn.running_mean, features.mean((0, 2, 3)), rtol=0, atol=1e-5)
    # Per batch of 32 images (one batch here): the unbiased variance over its N * H * W values.
    torch.testing.assert_close(
        bn.running_var, features.var((0, 2, 3), unbiased=True), rtol=1e-4, atol=1e-6
    )
    assert not model.training


def test_save_load_round_trip_and_the_variant_is_checked(tmp_path: Path) -> None:
    images, labels = _data(8)
    config = {**CONFIG, "joint": {**CONFIG["joint"], "epochs": 1}}
    model, _ = train_joint(images, labels, config, THROUGH, 2, progress_every=0)
    path = tmp_path / "joint.safetensors"
    save_joint(path, model, config, THROUGH, 2)
    loaded = load_joint(path, config, THROUGH, 2)
    u = torch.randn(4, 3)
    assert torch.equal(loaded.flow.predict(u), model.flow.predict(u))
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded.autoencoder(x), model.autoencoder(x))
    with pytest.raises(CheckpointMismatch, match="stop_gradient"):
        load_joint(path, config, STOP, 2)


def test_bad_labels_and_weights_are_refused() -> None:
    images, labels = _data(8)
    with pytest.raises(ValueError, match="labels must lie in 0..9"):
        train_joint(images, labels + 10, CONFIG, STOP, 0, progress_every=0)
    with pytest.raises(ValueError, match="disagree"):
        train_joint(images, labels[:4], CONFIG, STOP, 0, progress_every=0)
    with pytest.raises(ValueError, match="nll_weight must be > 0"):
        JointLatentFlow(latent_dim=3, nll_weight=0.0)


def test_an_ablation_variant_that_is_not_defined_is_a_config_error() -> None:
    latent = {"joint": {"variants": {"a": STOP}, "ablation_variants": ["a", "b"]}}
    with pytest.raises(ConfigError, match=r"\['b'\] are not in latent.joint.variants"):
        check_config({"latent": latent})


def test_ablation_table_reads_the_pretrained_outputs_and_summarises_over_seeds(
    tmp_path: Path,
) -> None:
    metrics = {"sample_accuracy": 0.9, "frechet_distance": 5.0, "label_probe_accuracy": 0.2}
    pretrained = []
    for seed, acc in enumerate([0.88, 0.89]):
        ours = tmp_path / f"ours{seed}.json"
        ours.write_text(
            json.dumps({"dataset": "fashion_mnist", "seed": seed, "test_accuracy": acc, **metrics})
        )
        cinn = tmp_path / f"cinn{seed}.json"
        cinn.write_text(json.dumps({"test_accuracy": acc - 0.01}))
        refs = tmp_path / "refs.json"
        refs.write_text(
            json.dumps(
                {
                    "rows": [
                        {"model": "real test images", "test_accuracy": float("nan")},
                        {"model": "MLP on the auto-encoder code", "test_accuracy": 0.8899},
                    ]
                }
            )
        )
        ae = tmp_path / "ae.json"
        ae.write_text(json.dumps({"test": {"mse": 0.01}}))
        pretrained.append((ours, cinn, refs, ae))
    joint = tmp_path / "joint.json"
    joint.write_text(
        json.dumps(
            {
                "configuration": "joint_nll1",
                "dataset": "fashion_mnist",
                "seed": 0,
                "test_accuracy": 0.9,
                "cinn_test_accuracy": 0.89,
                "code_mlp_accuracy": 0.91,
                "reconstruction_mse": 0.012,
                **metrics,
            }
        )
    )
    frame = ablation_table_stage(pretrained, [joint], tmp_path / "t.csv", tmp_path / "t.md")
    assert frame["configuration"].tolist() == ["pretrained", "pretrained", "joint_nll1"]
    assert frame["code_mlp_accuracy"].tolist() == [0.8899, 0.8899, 0.91]
    assert frame["cinn_test_accuracy"].tolist() == [0.87, 0.88, 0.89]
    assert pd.read_csv(tmp_path / "t.csv").shape == (3, 10)
    md = (tmp_path / "t.md").read_text()
    expected = f"{np.mean([0.88, 0.89]):.4f} ± {np.std([0.88, 0.89], ddof=1):.4f}"
    assert expected in md
    assert "0.901" in md  # the paper's accuracy next to it


@pytest.mark.slow
def test_smoke_ablation_reads_the_cinn_of_every_configuration(smoke_run: Path) -> None:
    """A pretrained row's cINN accuracy is the pipeline's evaluation of that seed's cINN; a joint
    row's is a cINN trained on that joint model's codes, scored on the whole test set."""
    n_test = yaml.safe_load(SMOKE_CONFIG.read_text())["latent"]["n_test"]
    table = pd.read_csv(smoke_run / "results" / "tables" / "latent_ablation.csv")
    assert set(table["configuration"]) == {"pretrained", "joint_stop_gradient", "joint_nll1"}
    for row in table.itertuples():
        if row.configuration == "pretrained":
            latent = smoke_run / "results" / "latent" / row.dataset
            cinn = json.loads((latent / f"metrics_cinn_seed{row.seed}.json").read_text())
            assert row.cinn_test_accuracy == cinn["test_accuracy"]
        else:
            correct = row.cinn_test_accuracy * n_test
            assert 0 <= correct <= n_test and abs(correct - round(correct)) < 1e-6, row
