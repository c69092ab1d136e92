"""Training on the linear-Gaussian problem's simulations: the method with the observation as a
continuous condition (a fixed ``eps`` or one learned with the flow), and ``sbi``'s NPE, the
field's standard baseline, on the very same simulations.

Example:
    >>> problem = LinearGaussian(torch.tensor([[1.0, 0.5], [-0.3, 0.8]]), noise_std=0.3)
    >>> flow, summary = train_flow(problem, 0.3, n_train=128, n_validation=32, epochs=2)
    >>> summary["epochs"], round(summary["eps_final"], 2)
    (2, 0.3)
"""

from __future__ import annotations

import numpy as np
import torch

from replicate.experiments.linear_gaussian.problem import LinearGaussian
from replicate.models.base import NetworkSettings
from replicate.models.conditional_flow import ConditionalFlow
from replicate.models.npe import NPEPosterior, fit_npe, gaussian_prior
from replicate.training import fit_conditional

__all__ = ["train_flow", "train_npe"]


def train_flow(
    problem: LinearGaussian,
    eps: float | None,
    *,
    seed: int = 0,
    n_train: int = 4096,
    n_validation: int = 1024,
    epochs: int = 60,
    batch_size: int = 256,
    patience: int = 8,
    n_blocks: int = 4,
    hidden: int = 64,
    lr: float = 2e-3,
) -> tuple[ConditionalFlow, dict[str, float]]:
    """Train the method on simulated pairs, the observation as a continuous condition:
    [x (d), padding (m)] <-> [z (d), y_hat (m)] (:meth:`ConditionalFlow.for_observations` with
    ``noise_std=eps``; None: eps learned, started at the observations' std), x and y standardised
    inside the model, early stopping on a held-out set. Returns the flow (best epoch) and a
    summary: the training and held-out NLL of the best epoch (the loss, constants dropped, so not
    comparable across ``eps``), the held-out ``log_prob`` (constants included: comparable across
    ``eps``), the eps the model ends with (mean over coordinates), epochs run, seconds."""
    generator = torch.Generator().manual_seed(seed)
    x, y = problem.simulate(n_train + n_validation, generator)
    x, y = x.float(), y.float()
    torch.manual_seed(seed)
    flow = ConditionalFlow.for_observations(
        problem.data_dim,
        problem.observation_dim,
        noise_std=eps,
        **NetworkSettings(n_blocks=n_blocks, hidden=hidden),
    )
    flow.fit_standardization(x[:n_train], y[:n_train])
    result = fit_conditional(
        flow,
        x[:n_train],
        y[:n_train],
        validation_data=(x[n_train:], y[n_train:]),
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        patience=patience,
        seed=seed,
    )
    per_epoch = len(result.history) // len(result.validation)
    best = result.best_segment
    best_epoch_losses = result.history[(best - 1) * per_epoch : best * per_epoch]
    with torch.no_grad():
        validation_log_prob = float(flow.log_prob(x[n_train:], y[n_train:]).mean())
    return flow.eval(), {
        "eps_final": float(flow.eps_now().detach().mean()),
        "train_nll": float(np.mean([h["loss"] for h in best_epoch_losses])),
        "validation_nll": result.validation[best - 1],
        "validation_log_prob": validation_log_prob,
        "epochs": len(result.validation),
        "best_epoch": best,
        "seconds": result.seconds,
    }


def train_npe(
    problem: LinearGaussian,
    *,
    seed: int = 0,
    n_train: int = 4096,
    n_validation: int = 1024,
    density_estimator: str = "maf",
    max_num_epochs: int | None = None,
    training_batch_size: int | None = None,
) -> tuple[NPEPosterior, dict[str, float]]:
    """``sbi``'s NPE with its defaults (:func:`replicate.models.npe.fit_npe`) on the very
    simulations :func:`train_flow` draws for ``seed``, all ``n_train + n_validation`` of them
    (sbi holds out its own tenth for early stopping), under the problem's prior N(0, I);
    ``density_estimator``: sbi's name of one; ``max_num_epochs`` None: until sbi's early
    stopping; ``training_batch_size`` None: sbi's default. Returns the posterior and a
    summary: epochs run, seconds."""
    x, y = problem.simulate(n_train + n_validation, torch.Generator().manual_seed(seed))
    torch.manual_seed(seed)
    prior = gaussian_prior(torch.ones(problem.data_dim))
    posterior, summary = fit_npe(
        x.float(),
        y.float(),
        prior,
        density_estimator=density_estimator,
        max_num_epochs=max_num_epochs,
        training_batch_size=training_batch_size,
    )
    return posterior, {"epochs": summary["epochs"], "seconds": summary["seconds"]}
