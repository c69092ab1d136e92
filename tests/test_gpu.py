"""GPU smoke test: every model trains a few steps on the device, its numbers agree with the CPU's,
and what it writes there loads on the CPU.

Run on a CUDA machine with ``python3 -m pytest -m cuda``. Each test also runs on the CPU (the
``cpu`` case, in every test run), so the test's own logic is exercised where no GPU is; the
``cuda`` cases skip, saying why, where PyTorch sees no GPU.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from replicate.experiments.gmm.problem import GaussianMixture
from replicate.experiments.gmm.settings import training_settings
from replicate.experiments.gmm.training import build_model, load_gmm_model, train_gmm_model
from replicate.experiments.latent.models import (
    load_latent_cinn,
    load_latent_flow,
    save_latent_cinn,
    save_latent_flow,
)
from replicate.experiments.latent.training import train_latent_cinn, train_latent_flow

REPO = Path(__file__).resolve().parents[1]
PAPER = yaml.safe_load((REPO / "config" / "config.yaml").read_text())

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[
            pytest.mark.cuda,
            pytest.mark.skipif(
                not torch.cuda.is_available(), reason="no CUDA GPU visible to PyTorch"
            ),
        ],
    ),
]
# float32 on two devices: matmuls sum in other orders (and cuBLAS may use TF32, off here), so the
# same weights give outputs equal to about 1e-5 relative after 2 blocks; 1e-4 leaves margin.
TOLERANCE = {"rtol": 1e-4, "atol": 1e-4}


@pytest.fixture(autouse=True)
def _full_float32_matmuls():
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = previous


def gmm_settings(model: str, network: str) -> dict:
    cfg = copy.deepcopy(PAPER["gmm"])
    cfg.update(n_train=2048, batch_size=128, iterations=5)
    for settings in cfg["networks"].values():
        settings.update(n_blocks=2, hidden=32)
    return training_settings(cfg, model, network)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("model", ["ours", "inn_full", "cinn"])
def test_gmm_model_trains_on_the_device_and_loads_on_the_cpu(
    tmp_path: Path, device: str, model: str
) -> None:
    settings = gmm_settings(model, "reference")
    ckpt, status = tmp_path / "m.safetensors", tmp_path / "m.json"
    result = train_gmm_model(model, settings, "all", 0, device, ckpt, status, progress_every=0)
    assert not result["diverged"] and result["iterations_done"] == 5
    assert result["device"].startswith(device)
    assert all(np.isfinite(v) for v in result["final_terms"].values())
    on_cpu = load_gmm_model(model, ckpt, settings, "all", "cpu")
    x, _ = GaussianMixture("all").sample(64, torch.Generator().manual_seed(1))
    assert torch.isfinite(on_cpu.predict(x)).all()
    assert json.loads(status.read_text())["device"].startswith(device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("model", ["ours", "inn_full", "cinn"])
def test_gmm_forward_pass_is_the_same_on_cpu_and_device(device: str, model: str) -> None:
    settings = gmm_settings(model, "reference")
    cpu_model = build_model(model, settings, "all", seed=0).eval()
    dev_model = copy.deepcopy(cpu_model).to(device)
    x, labels = GaussianMixture("all").sample(256, torch.Generator().manual_seed(2))
    padded = torch.cat([x, torch.zeros(len(x), cpu_model.network.dim - 2)], dim=1)
    if model == "cinn":
        condition = GaussianMixture("all").one_hot(labels)
        out_cpu, log_det_cpu = cpu_model.network(x, condition)
        out_dev, log_det_dev = dev_model.network(x.to(device), condition.to(device))
    else:
        out_cpu, log_det_cpu = cpu_model.network(padded)
        out_dev, log_det_dev = dev_model.network(padded.to(device))
    torch.testing.assert_close(out_dev.cpu(), out_cpu, **TOLERANCE)
    torch.testing.assert_close(log_det_dev.cpu(), log_det_cpu, **TOLERANCE)


LATENT_FLOW = {
    "n_blocks": 2,
    "hidden": 16,
    "subnet_layers": 3,
    "clamp": 2.0,
    "eps": 0.1,
    "sigma": 0.05,
    "epochs": 2,
    "batch_size": 32,
    "lr": 1e-3,
}


@pytest.mark.parametrize("device", DEVICES)
def test_latent_flow_and_cinn_train_on_the_device_and_load_on_the_cpu(
    tmp_path: Path, device: str
) -> None:
    rng = np.random.default_rng(0)
    u = rng.normal(size=(128, 20)).astype(np.float32)
    y = rng.integers(0, 10, 128)
    flow, summary = train_latent_flow(u, y, LATENT_FLOW, seed=0, device=device, progress_every=0)
    cinn, cinn_summary = train_latent_cinn(u, y, LATENT_FLOW, 2, 0, device, progress_every=0)
    for history in (summary, cinn_summary):
        assert np.isfinite(history["epoch_loss"]).all()
    save_latent_flow(tmp_path / "flow.safetensors", flow, LATENT_FLOW, 20, 0)
    save_latent_cinn(tmp_path / "cinn.safetensors", cinn.cpu(), LATENT_FLOW, 0)
    flow_cpu = load_latent_flow(tmp_path / "flow.safetensors", LATENT_FLOW, "cpu")
    cinn_cpu = load_latent_cinn(tmp_path / "cinn.safetensors", LATENT_FLOW, "cpu")
    batch = torch.as_tensor(u[:32])
    labels = torch.as_tensor(y[:32])
    with torch.no_grad():
        torch.testing.assert_close(
            flow.predict(batch.to(device)).cpu(), flow_cpu.predict(batch), **TOLERANCE
        )
        assert torch.isfinite(cinn_cpu.log_prob(batch, labels)).all()
