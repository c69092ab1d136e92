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
import pandas as pd
import pytest
import torch
from helpers import small_gmm_settings, small_kinematics_config

from replicate.experiments.gmm.problem import GaussianMixture
from replicate.experiments.gmm.stages import train_gmm_model
from replicate.experiments.gmm.training import gmm_model, load_gmm_model
from replicate.experiments.kinematics.settings import training_settings as training_settings_e4
from replicate.experiments.kinematics.stages import train_kinematics_model
from replicate.experiments.latent.autoencoder import train_autoencoder
from replicate.experiments.latent.joint import train_joint
from replicate.experiments.latent.judges import train_classifier
from replicate.experiments.latent.models import (
    load_latent_cinn,
    load_latent_flow,
    save_latent_cinn,
    save_latent_flow,
)
from replicate.experiments.latent.training import train_latent_cinn, train_latent_flow
from replicate.runtime import TrainingDiverged
from replicate.training import TrainingFiles, make_optimizer
from replicate.training_steps import EXECUTION_ENV, StepRunner, TrainingStep

REPO = Path(__file__).resolve().parents[1]

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


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("model", ["ours", "inn_full", "cinn"])
def test_gmm_model_trains_on_the_device_and_loads_on_the_cpu(
    tmp_path: Path, device: str, model: str
) -> None:
    settings = small_gmm_settings(model, "reference")
    ckpt, status = tmp_path / "m.safetensors", tmp_path / "m.json"
    files = TrainingFiles(ckpt, status)
    result = train_gmm_model(model, settings, "all", 0, files, device=device, progress_every=0)
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
    settings = small_gmm_settings(model, "reference")
    cpu_model = gmm_model(model, settings, "all", seed=0).eval()
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


# -- the training step as a CUDA graph ------------------------------------------------------------
CUDA_ONLY = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible to PyTorch"),
]


def _train_every_model(tmp_path: Path, device: str) -> dict[str, list[float]]:
    """Every trainer of the pipeline on tiny data: each model's recorded loss history."""
    histories: dict[str, list[float]] = {}
    for model in ("ours", "inn_full", "cinn"):
        settings = small_gmm_settings(model, "reference") | {"iterations": 30}
        out = tmp_path / f"gmm_{model}"
        out.mkdir(parents=True)
        files = TrainingFiles(out / "m.safetensors", out / "m.json", history=out / "h.csv")
        train_gmm_model(model, settings, "all", 0, files, device=device, progress_every=0)
        histories[f"gmm_{model}"] = pd.read_csv(out / "h.csv")["loss"].tolist()
    kin = small_kinematics_config(iterations=30)
    for model in ("ours_eps0.1", "inn", "cinn"):
        out = tmp_path / f"kin_{model}"
        out.mkdir(parents=True)
        files = TrainingFiles(out / "m.safetensors", out / "m.json", history=out / "h.csv")
        settings = training_settings_e4(kin, model)
        train_kinematics_model(model, settings, 0, files, device=device, progress_every=0)
        histories[f"kinematics_{model}"] = pd.read_csv(out / "h.csv")["loss"].tolist()
    rng = np.random.default_rng(0)
    # 100 rows in batches of 32: every epoch ends on a partial batch of 4 (run eagerly).
    u, y = rng.normal(size=(100, 20)).astype(np.float32), rng.integers(0, 10, 100)
    flow_cfg = LATENT_FLOW | {"epochs": 3}
    histories["latent_flow"] = train_latent_flow(u, y, flow_cfg, 0, device=device)[1]["epoch_loss"]
    histories["latent_cinn"] = train_latent_cinn(u, y, flow_cfg, 3, 0, device)[1]["epoch_loss"]
    images = rng.integers(0, 256, (100, 28, 28)).astype(np.uint8)
    ae_cfg = {"latent_dim": 4, "epochs": 3, "batch_size": 32, "lr": 1e-3}
    histories["autoencoder"] = train_autoencoder(images, ae_cfg, 0, device=device)[1]["epoch_loss"]
    clf_cfg = {"epochs": 3, "batch_size": 32, "lr": 1e-3}
    histories["classifier"] = train_classifier(images, y, clf_cfg, 0, device)[1]["epoch_loss"]
    # Joint training with GLF's optimisation, its rates halved every epoch: a captured step
    # holds its learning rates, so each halving must capture the step anew.
    joint_cfg = {"autoencoder": {"latent_dim": 4}, "flow": LATENT_FLOW, "joint": ae_cfg}
    glf = {
        "flow_betas": [0.8, 0.9],
        "flow_eps": 1e-6,
        "flow_weight_decay": 2e-5,
        "lr_halving_epochs": 1,
    }
    variant = {"stop_gradient": False, "nll_weight": 1.0, "glf_optimizer": glf}
    _, joint = train_joint(images, y, joint_cfg, variant, 0, device=device, progress_every=0)
    histories["joint_glf"] = joint["epoch_loss"]
    return histories


@pytest.mark.parametrize(
    ("device", "mode"),
    [
        ("cpu", "deferred"),
        pytest.param("cuda", "deferred", marks=CUDA_ONLY),
        pytest.param("cuda", "graph", marks=CUDA_ONLY),
    ],
)
def test_every_trainer_gives_the_eager_numbers_as_a_cuda_graph(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    device: str,
    mode: str,
) -> None:
    """Graph replays (and blocks read back at once) against the eager, per-iteration-checked step
    on the same device: same seeds, same random draws, so the losses agree to float32 rounding
    on a GPU (capturable Adam sums in another order) and exactly on the CPU."""
    monkeypatch.setenv(EXECUTION_ENV, "eager")
    eager = _train_every_model(tmp_path / "eager", device)
    monkeypatch.setenv(EXECUTION_ENV, mode)
    replayed = _train_every_model(tmp_path / mode, device)
    assert "capture failed" not in caplog.text  # every step was replayed as a graph
    tolerance = 2e-3 if device == "cuda" else 0.0
    assert replayed.keys() == eager.keys()
    for name, losses in eager.items():
        np.testing.assert_allclose(
            replayed[name], losses, rtol=tolerance, atol=tolerance, err_msg=name
        )


@pytest.mark.parametrize("mode", [pytest.param("graph", marks=CUDA_ONLY)])
def test_the_training_loop_never_waits_for_the_gpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    """Every iteration of every trainer runs under CUDA's sync debug mode set to error: a host
    read (a float() of a loss, an input check) would raise. Only the capture and the read-back
    of a block may wait."""
    monkeypatch.setenv(EXECUTION_ENV, mode)

    def strict(method):
        def wrapped(self, *args, **kwargs):
            torch.cuda.set_sync_debug_mode("error")
            try:
                return method(self, *args, **kwargs)
            finally:
                torch.cuda.set_sync_debug_mode(0)

        return wrapped

    def lenient(method):
        def wrapped(self, *args, **kwargs):
            previous = torch.cuda.get_sync_debug_mode()
            torch.cuda.set_sync_debug_mode(0)
            try:
                return method(self, *args, **kwargs)
            finally:
                torch.cuda.set_sync_debug_mode(previous)

        return wrapped

    monkeypatch.setattr(StepRunner, "run", strict(StepRunner.run))
    monkeypatch.setattr(StepRunner, "_capture", lenient(StepRunner._capture))
    histories = _train_every_model(tmp_path, "cuda")
    assert all(np.isfinite(losses).all() for losses in histories.values())
    assert "capture failed" not in caplog.text


@pytest.mark.parametrize("device", [pytest.param("cuda", marks=CUDA_ONLY)])
def test_a_divergence_inside_a_graph_names_its_iteration_and_keeps_the_block_start(
    device: str,
) -> None:
    w = torch.nn.Parameter(torch.tensor([3.0], device=device))
    optimizer = make_optimizer([w], lr=0.1)
    step = TrainingStep(
        lambda i: {"scale": torch.tensor(float("inf") if i == 17 else 1.0)},
        lambda scale: {"loss": ((w - 1.0) ** 2).sum() * scale},
    )
    runner = StepRunner(step, optimizer, grad_clip=None)
    assert runner.mode == "graph"
    with pytest.raises(TrainingDiverged) as raised:
        for i in range(20):
            runner.run(i)
            if (i + 1) % 10 == 0:
                list(runner.flush())
    assert raised.value.iteration == 17
    reference = torch.nn.Parameter(torch.tensor([3.0]))
    ref_opt = make_optimizer([reference], lr=0.1)
    for _ in range(10):  # the weights after the first block
        ref_opt.zero_grad()
        ((reference - 1.0) ** 2).sum().backward()
        ref_opt.step()
    torch.testing.assert_close(w.detach().cpu(), reference.detach(), rtol=1e-5, atol=1e-6)
