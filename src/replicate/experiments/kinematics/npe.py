"""The field's standard amortised baseline on E4: neural posterior estimation (NPE) from ``sbi``
(:func:`replicate.models.npe.fit_npe`: sbi's default density estimator and training loop,
resumable per epoch), given exactly the simulator pairs ours sees: the ``training.iterations``
batches of ``training.batch_size`` fresh pairs that :func:`~.problem.simulated_batch` draws for
the seed, as one data set. The prior is E4's (independent Gaussians,
:data:`~.problem.PRIOR_STD`). The estimator's weights (its z-scoring included) are saved as
safetensors and rebuilt from the settings, so a checkpoint loads without pickle.

Example:
    >>> import tempfile, pathlib
    >>> settings = {"training": {"iterations": 4, "batch_size": 64},
    ...             "npe": {"density_estimator": "maf", "max_num_epochs": 2}}
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> files = TrainingFiles(d / "npe.safetensors", d / "npe.json")
    >>> status = train_npe_model("npe", settings, 0, files)
    >>> status["diverged"], status["simulations"]
    (False, 256)
    >>> load_npe(d / "npe.safetensors", settings).sample(torch.zeros(3, 2), n=5).shape
    torch.Size([3, 5, 4])
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor

from replicate.checkpoints import (
    config_hash,
    discard_resumable,
    load_checkpoint,
    save_checkpoint,
)
from replicate.experiments.kinematics.problem import PRIOR_STD, simulated_batch
from replicate.files import atomic_path, write_json
from replicate.fingerprints import current_code
from replicate.models.npe import NPEPosterior, fit_npe, gaussian_prior, npe_estimator
from replicate.runtime import resolve_device, seed_everything
from replicate.training import TrainingFiles

__all__ = ["load_npe", "npe_pairs", "train_npe_model"]

log = logging.getLogger("replicate")

DATA_DIM, OBSERVATION_DIM = 4, 2


def npe_pairs(settings: Mapping[str, Any], seed: int) -> tuple[Tensor, Tensor]:
    """The simulator pairs ours trains on with ``seed``, as one data set (x, y) in float32: the
    batches of iterations 0, 1, ... of :func:`~.problem.simulated_batch`."""
    training = settings["training"]
    batches = [
        simulated_batch(training["batch_size"], seed, i) for i in range(training["iterations"])
    ]
    return torch.cat([x for x, _ in batches]).float(), torch.cat([y for _, y in batches]).float()


def _metadata(settings: Mapping[str, Any]) -> dict[str, Any]:
    return {"experiment": "kinematics", "model": "npe", **settings}


def train_npe_model(
    name: str,
    settings: Mapping[str, Any],
    seed: int,
    files: TrainingFiles,
    *,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Train sbi's NPE on the pairs ours sees with ``seed`` (:func:`npe_pairs`); write
    ``files``: the estimator (safetensors), the status JSON (returned; the keys of the other
    models' status) and, with ``files.history``, the per-epoch training and validation losses.
    With ``files.resume``, the loop's state is saved there after every epoch and a killed run
    resumes from it (deleted once every output is written).
    """
    dev = resolve_device(device)
    npe_cfg = dict(settings["npe"])
    density_estimator = npe_cfg.get("density_estimator", "maf")
    seed_everything(seed)
    x, y = npe_pairs(settings, seed)
    log.info(
        "training %s (sbi NPE, %s), seed %d, device %s, on %d simulator pairs",
        name,
        density_estimator,
        seed,
        dev,
        len(x),
    )
    posterior, summary = fit_npe(
        x,
        y,
        gaussian_prior(torch.tensor(PRIOR_STD), dev),
        density_estimator=density_estimator,
        max_num_epochs=npe_cfg.get("max_num_epochs"),
        training_batch_size=npe_cfg.get("training_batch_size"),
        resume=files.resume,
        resume_metadata={**_metadata(settings), "seed": seed},
        device=dev,
    )
    epochs, best, seconds = summary["epochs"], summary["best_validation_loss"], summary["seconds"]
    steps = epochs * summary["steps_per_epoch"]
    status = {
        "model": name,
        "seed": seed,
        "device": str(dev),
        "diverged": not torch.isfinite(torch.tensor(best)).item(),
        "message": f"finished after {epochs} epochs (best validation loss {best:.4g})",
        "simulations": len(x),
        "epochs": epochs,
        "iterations_done": steps,
        "iterations": steps,
        "seconds": seconds,
        "seconds_per_iteration": seconds / max(steps, 1),
        "resumed_at_iteration": summary["restored_epochs"] * summary["steps_per_epoch"],
        "final_terms": {"validation_loss": best},
        "config_hash": config_hash(_metadata(settings)),
        "code": current_code(),
        "torch_threads": torch.get_num_threads(),
    }
    save_checkpoint(files.checkpoint, posterior.estimator.state_dict(), _metadata(settings))
    if files.history is not None:
        history = pd.DataFrame(
            {
                "epoch": range(1, epochs + 1),
                "training_loss": summary["training_loss"],
                "validation_loss": summary["validation_loss"],
            }
        )
        with atomic_path(files.history) as tmp:
            history.to_csv(tmp, index=False)
    write_json(files.status, status)
    discard_resumable(files.resume)  # only now: every output is written
    log.info("%s: %s, %.1f s", name, status["message"], seconds)
    return status


def load_npe(
    checkpoint_path: str | os.PathLike,
    settings: Mapping[str, Any],
    device: str | torch.device = "cpu",
) -> NPEPosterior:
    """Load a checkpoint written by :func:`train_npe_model`, in eval mode.

    Raises :class:`replicate.checkpoints.CheckpointMismatch` if it was trained under other settings.
    """
    dev = resolve_device(device)
    tensors = load_checkpoint(Path(checkpoint_path), _metadata(settings), dev)
    estimator = npe_estimator(
        settings["npe"].get("density_estimator", "maf"), DATA_DIM, OBSERVATION_DIM, dev
    )
    estimator.load_state_dict(tensors)
    return NPEPosterior(estimator).eval()
