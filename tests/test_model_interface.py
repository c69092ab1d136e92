"""Every model through the one interface (replicate.models.base.ConditionalModel), in zuko's
manner: one parametrised test per property, each run on ours, the INN, the cINN and the two
models on auto-encoder latents. A model that breaks a property fails its own case only.

The interface: ``loss_terms(x, condition, **schedule(i))`` (the trainer's one entry), ``nll``,
``sample(condition)``, ``log_prob`` where ``has_log_prob``, ``fit_standardization``, the
invertible ``network`` and save/load through ``replicate.checkpoints``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from replicate.checkpoints import model_tensors, restore_model
from replicate.experiments.latent.models import LatentCINN, LatentFlow
from replicate.models import INN, ConditionalFlow, ConditionalINN, NetworkSettings

NETWORK = NetworkSettings(n_blocks=2, hidden=16, subnet_layers=2)
D, M, B = 3, 4, 6  # data, condition (one-hot of M classes), batch


@dataclasses.dataclass(frozen=True)
class Case:
    """How to build one model and give it a batch: ``make(seed)`` builds it (permutations from
    the seed), ``condition(labels)`` turns class indices into the condition it takes."""

    name: str
    make: Callable[[int], torch.nn.Module]
    condition: Callable[[Tensor], Tensor]


def _one_hot(labels: Tensor) -> Tensor:
    return torch.eye(M)[labels]


CASES = [
    Case(
        "ours",
        lambda s: ConditionalFlow(D, M, latent_dim=D, **NETWORK, permutation_seed=s),
        _one_hot,
    ),
    Case(
        "inn",
        lambda s: INN(D, M, latent_dim=D, **NETWORK, permutation_seed=s),
        _one_hot,
    ),
    Case("cinn", lambda s: ConditionalINN(D, M, **NETWORK, permutation_seed=s), _one_hot),
    Case(
        "latent_flow",
        lambda s: LatentFlow(latent_dim=D, n_classes=M, **NETWORK, permutation_seed=s),
        lambda labels: labels,
    ),
    Case(
        "latent_cinn",
        lambda s: LatentCINN(latent_dim=D, n_classes=M, **NETWORK, permutation_seed=s),
        lambda labels: labels,
    ),
]
MODELS = pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])


def _batch(case: Case, seed: int = 0) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(B, D, generator=generator)
    return x, case.condition(torch.arange(B) % M)


def _model(case: Case, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return case.make(seed)


@MODELS
def test_loss_terms_is_a_finite_loss_that_reaches_every_weight(case: Case) -> None:
    model, (x, c) = _model(case), _batch(case)
    terms = model.loss_terms(x, c, **model.schedule(0))
    assert terms["loss"].shape == () and torch.isfinite(terms["loss"])
    terms["loss"].backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


@MODELS
def test_sample_gives_one_point_per_condition(case: Case) -> None:
    model, (_, c) = _model(case), _batch(case)
    torch.manual_seed(1)
    samples = model.sample(c)
    assert samples.shape == (B, D) and torch.isfinite(samples).all()
    torch.manual_seed(1)
    assert torch.equal(model.sample(c), samples), "same seed, same samples"


@MODELS
def test_network_inverts_its_forward_map_with_the_autograd_log_det(case: Case) -> None:
    """The invertible network of every model: inverse(forward(v)) = v, and its log-det is
    log|det J| of the forward map computed by autograd, row by row."""
    model = _model(case).double()
    network = model.network
    generator = torch.Generator().manual_seed(2)
    v = torch.randn(3, network.dim, generator=generator, dtype=torch.float64)
    cond = torch.randn(3, network.condition_dim, generator=generator, dtype=torch.float64)
    cond = cond if network.condition_dim else None
    y, log_det = network(v, cond)
    assert torch.allclose(network.inverse(y, cond), v, atol=1e-10)
    for row in range(len(v)):
        c_row = None if cond is None else cond[row : row + 1]
        jacobian = torch.autograd.functional.jacobian(
            lambda t, c_row=c_row: network(t.unsqueeze(0), c_row)[0].squeeze(0), v[row]
        )
        assert torch.allclose(log_det[row], torch.linalg.slogdet(jacobian)[1], atol=1e-10)


@MODELS
def test_log_prob_follows_the_change_of_variables_of_the_standardisation(case: Case) -> None:
    """Where a model has a density: the same network on data scaled by 5 and shifted by 2,
    standardised inside the model, gives the density of the unscaled data minus D log 5 (an
    affine change of variables: independent of how the model computes it)."""
    if not _model(case).has_log_prob:
        pytest.skip(f"{case.name} has no density (the INN is trained by four losses)")
    x, c = _batch(case)
    plain, scaled = _model(case), _model(case)
    scaled.fit_standardization(5 * torch.randn(500, D) + 2)
    shift, scale = _x_standardization(scaled)
    with torch.no_grad():
        expected = plain.log_prob((x - shift) / scale, c) - torch.log(scale).sum()
        got = scaled.log_prob(x, c)
    assert got.shape == (B,) and torch.isfinite(got).all()
    assert torch.allclose(got, expected, atol=1e-4)


def _x_standardization(model: torch.nn.Module) -> tuple[Tensor, Tensor]:
    standardization = getattr(model, "x_standardization", None) or model.u_standardization
    return standardization.shift, standardization.scale


@MODELS
def test_samples_come_back_in_the_data_units_after_standardisation(case: Case) -> None:
    model = _model(case)
    model.fit_standardization(100 + 0.1 * torch.randn(500, D))
    torch.manual_seed(3)
    labels = torch.zeros(400, dtype=torch.int64)
    samples = model.sample(case.condition(labels))
    # An untrained model maps N(0, I) to roughly unit scale: back in data units, about 100.
    assert (samples.mean(0) - 100).abs().max() < 1.0


@MODELS
def test_save_load_round_trip_gives_the_same_model(case: Case) -> None:
    model, (x, c) = _model(case, seed=0), _batch(case)
    model.fit_standardization(3 * torch.randn(100, D) - 1)
    loaded = _model(case, seed=0)  # same architecture; weights of another draw
    torch.nn.init.normal_(next(loaded.parameters()))
    restore_model(loaded, model_tensors(model))
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    torch.manual_seed(4)
    expected = model.loss_terms(x, c, **model.schedule(0))["loss"]
    torch.manual_seed(4)
    assert torch.equal(loaded.loss_terms(x, c, **loaded.schedule(0))["loss"], expected)


@MODELS
def test_bad_input_is_refused_naming_the_argument(case: Case) -> None:
    model, (x, c) = _model(case), _batch(case)
    wrong_width = torch.randn(B, D + 1)
    with_nan = x.clone()
    with_nan[0, 0] = float("nan")
    checked = model.log_prob if model.has_log_prob else model.predict
    args = (lambda v: (v, c)) if model.has_log_prob else (lambda v: (v,))
    for bad in (wrong_width, with_nan):
        with pytest.raises(ValueError, match="x|u|shape|finite"):
            checked(*args(bad))
