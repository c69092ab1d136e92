"""The GLF auto-encoder: architecture and shapes, a training step that lowers the loss, safe
save/load, and a killed-then-resumed training run that ends with the uninterrupted run's weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import killed_after_checkpoints

import replicate.experiments.latent.autoencoder as ae_module
from replicate.checkpoints import CheckpointMismatch, model_tensors, save_checkpoint
from replicate.experiments.latent.autoencoder import (
    AutoEncoder,
    encode_images,
    load_autoencoder,
    reconstruction_error,
    to_unit_images,
    train_autoencoder,
)

torch.set_num_threads(1)


def _images(n: int, seed: int = 0) -> np.ndarray:
    """Blurry blobs: structured enough that an auto-encoder can learn them."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:28, :28]
    centres = rng.uniform(8, 20, size=(n, 2))
    d2 = (yy[None] - centres[:, :1, None]) ** 2 + (xx[None] - centres[:, 1:, None]) ** 2
    return (255 * np.exp(-d2 / 18.0)).astype(np.uint8)


def test_shapes_ranges_and_glf_architecture() -> None:
    torch.manual_seed(0)
    model = AutoEncoder(latent_dim=20).eval()
    images = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        u = model.encode(images)
        recon = model.decode(u)
    assert u.shape == (5, 20)
    assert recon.shape == (5, 1, 28, 28)
    assert float(recon.min()) >= 0.0 and float(recon.max()) <= 1.0
    linear = [m for m in model.encoder if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == [(6272, 1024), (1024, 20)]
    convs = [m for m in model.encoder if isinstance(m, torch.nn.Conv2d)]
    assert [(m.in_channels, m.out_channels, m.kernel_size, m.stride) for m in convs] == [
        (1, 64, (4, 4), (2, 2)),
        (64, 128, (4, 4), (2, 2)),
    ]
    with pytest.raises(ValueError, match=r"\(N, 1, 28, 28\)"):
        model.encode(torch.rand(5, 28, 28))
    with pytest.raises(ValueError, match=r"\(N, 20\)"):
        model.decode(torch.rand(5, 19))


def test_to_unit_images_scales_and_rejects_floats() -> None:
    x = np.array([[[0] * 28] * 28, [[255] * 28] * 28], dtype=np.uint8)
    t = to_unit_images(x)
    assert t.shape == (2, 1, 28, 28) and float(t[0].max()) == 0.0 and float(t[1].min()) == 1.0
    with pytest.raises(ValueError, match="uint8"):
        to_unit_images(x.astype(np.float32))


def test_one_training_step_on_a_tiny_batch_lowers_the_loss() -> None:
    torch.manual_seed(0)
    model = AutoEncoder(latent_dim=20).train()
    batch = to_unit_images(_images(8))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def loss() -> torch.Tensor:
        return torch.mean((model(batch) - batch) ** 2)

    before = loss()
    optimizer.zero_grad()
    before.backward()
    optimizer.step()
    with torch.no_grad():
        after = loss()
    assert float(after) < float(before.detach())


def test_reconstruction_error_matches_a_direct_computation() -> None:
    torch.manual_seed(0)
    model = AutoEncoder(latent_dim=4).eval()
    images = _images(7)
    x = to_unit_images(images)
    with torch.no_grad():
        diff = model(x) - x
    got = reconstruction_error(model, images, batch_size=3)
    assert got["mse"] == pytest.approx(float((diff**2).mean()), rel=1e-5)
    assert got["mae"] == pytest.approx(float(diff.abs().mean()), rel=1e-5)
    # Batched encoding equals one big batch (eval mode: BatchNorm uses running statistics).
    np.testing.assert_allclose(
        encode_images(model, images, batch_size=2),
        model.encode(x).detach().numpy(),
        rtol=1e-5,
        atol=1e-6,
    )


def test_save_load_round_trip_and_config_check(tmp_path: Path) -> None:
    images = _images(6)
    cfg = {"latent_dim": 5, "epochs": 1, "batch_size": 3, "lr": 1e-3}
    model, _ = train_autoencoder(images, cfg, seed=0, progress_every=0)
    path = tmp_path / "ae.safetensors"
    save_checkpoint(path, model_tensors(model), ae_module._metadata(cfg))
    loaded = load_autoencoder(path, cfg)
    assert not loaded.training
    x = to_unit_images(images)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    with pytest.raises(CheckpointMismatch):
        load_autoencoder(path, {**cfg, "latent_dim": 6})
    # Any setting it trained under, not only the shape: a downstream rule asking for a model of
    # other epochs or learning rate (a stale file kept by `--rerun-triggers mtime`) is refused.
    with pytest.raises(CheckpointMismatch, match=r"epochs: stored 1, expected 2"):
        load_autoencoder(path, {**cfg, "epochs": 2})
    with pytest.raises(CheckpointMismatch, match=r"lr: stored 0.001, expected 0.01"):
        load_autoencoder(path, {**cfg, "lr": 1e-2})


def test_killed_and_resumed_training_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    images = _images(16)
    cfg = {"latent_dim": 3, "epochs": 3, "batch_size": 8, "lr": 1e-3}
    reference, ref_summary = train_autoencoder(images, cfg, seed=1, progress_every=0)

    ckpt = tmp_path / "last.safetensors"
    with killed_after_checkpoints(1):  # right after epoch 1's checkpoint
        train_autoencoder(images, cfg, seed=1, checkpoint_path=ckpt, progress_every=0)
    resumed, summary = train_autoencoder(images, cfg, seed=1, checkpoint_path=ckpt)

    assert summary["resumed_after_epoch"] == 1
    assert summary["iterations_run"] == 2 * 2  # two epochs of two batches left
    assert summary["epoch_loss"] == ref_summary["epoch_loss"]
    for (name, a), b in zip(
        reference.state_dict().items(), resumed.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name


def test_checkpoint_of_another_configuration_is_not_resumed(tmp_path: Path) -> None:
    images = _images(8)
    ckpt = tmp_path / "last.safetensors"
    cfg = {"latent_dim": 3, "epochs": 2, "batch_size": 4, "lr": 1e-3}

    with killed_after_checkpoints(1):
        train_autoencoder(images, cfg, seed=0, checkpoint_path=ckpt, progress_every=0)
    assert ckpt.exists()
    _, summary = train_autoencoder(
        images, {**cfg, "lr": 2e-3}, seed=0, checkpoint_path=ckpt, progress_every=0
    )
    assert summary["resumed_after_epoch"] == 0
    # The finished run's state replaced the other configuration's (kept until the stage has
    # saved the model): run again, it has nothing left to train.
    _, again = train_autoencoder(
        images, {**cfg, "lr": 2e-3}, seed=0, checkpoint_path=ckpt, progress_every=0
    )
    assert again["resumed_after_epoch"] == 2 and again["iterations_run"] == 0
