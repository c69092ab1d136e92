"""The INN baseline's losses, MMD and ramp against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from replicate.models.inn import INN, backward_ramp, mmd_multiscale

torch.set_num_threads(1)


def mmd_numpy(x: np.ndarray, y: np.ndarray, widths: tuple[float, ...]) -> float:
    """Biased MMD^2 with inverse-multiquadratic kernels, straight from the definition."""

    def k(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        return sum(w**2 / (w**2 + d2) for w in widths)

    return float(k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean())


WIDTHS = (0.05, 0.2, 0.9)


def test_mmd_of_identical_samples_is_zero() -> None:
    x = torch.randn(200, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert abs(float(mmd_multiscale(x, x.clone(), WIDTHS))) < 1e-12


def test_mmd_of_two_draws_of_one_distribution_is_small_and_shifted_is_large() -> None:
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(400, 2, generator=g), torch.randn(400, 2, generator=g)
    same, shifted = mmd_multiscale(x, y, WIDTHS), mmd_multiscale(x, y + 2.0, WIDTHS)
    assert float(shifted) > 20 * float(same)
    assert float(shifted) > 0.1


@pytest.mark.parametrize("shift", [0.0, 0.3, 3.0])
def test_mmd_matches_numpy(shift: float) -> None:
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(50, 4)), rng.normal(size=(60, 4)) + shift
    ours = float(mmd_multiscale(torch.tensor(x), torch.tensor(y), WIDTHS))
    assert ours == pytest.approx(mmd_numpy(x, y, WIDTHS), rel=1e-9, abs=1e-12)


def test_mmd_rejects_mismatched_widths() -> None:
    with pytest.raises(ValueError, match="equal d"):
        mmd_multiscale(torch.zeros(3, 2), torch.zeros(3, 4))


def test_ramp_values_at_known_epochs() -> None:
    assert backward_ramp(0, 50) == pytest.approx(0.004)
    assert backward_ramp(25, 50) == pytest.approx(2 * 0.002**0.5)
    # reaches 1 at epoch 50 * (1 - ln 2 / ln 500) = 44.42, and stays there
    assert backward_ramp(44, 50) < 1.0
    assert backward_ramp(45, 50) == 1.0
    assert backward_ramp(60, 50) == 1.0
    # a 10x faster ramp (the altered variant) saturates 10x earlier
    assert backward_ramp(4, 5) < 1.0 <= backward_ramp(4.5, 5)


def test_ramp_is_constant_within_an_epoch_as_in_the_reference() -> None:
    inn = INN(2, 3, 2, n_blocks=1, hidden=4, ramp_epochs=50, iterations_per_epoch=8)
    assert inn.ramp(0) == inn.ramp(7) == pytest.approx(0.004)
    assert inn.ramp(8) == pytest.approx(backward_ramp(1, 50))
    assert inn.ramp(399) == pytest.approx(backward_ramp(49, 50))


def identity_inn(**kw) -> INN:
    """An INN whose network is the identity (zero subnets, identity permutations)."""
    inn = INN(2, 3, 1, n_blocks=2, hidden=4, **kw)  # width 4: [x (2), pad (2)] <-> [z (1), y (3)]
    with torch.no_grad():
        for p in inn.network.blocks.parameters():
            p.zero_()
        n = inn.network.permutations
        inn.network.permutations.copy_(torch.arange(n.shape[1]).expand_as(n))
        inn.network.inverse_permutations.copy_(torch.arange(n.shape[1]).expand_as(n))
    return inn.double()


def test_each_loss_term_on_the_identity_network_without_noise() -> None:
    # With the identity, no noise: out = [x1, x2, 0, 0], so z = x1 and y_out = [x2, 0, 0].
    weights = {"y": 2.0, "z": 5.0, "x_backward": 7.0, "x_reconstruction": 11.0}
    inn = identity_inn(y_noise=0.0, pad_noise=0.0, weights=weights, ramp_epochs=50)
    x = torch.tensor([[1.0, 2.0], [-1.0, 0.5]], dtype=torch.float64)
    c = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
    torch.manual_seed(0)
    with torch.no_grad():
        terms = inn.loss_terms(x, c, **inn.schedule(0))
    y_out = torch.stack([x[:, 1], torch.zeros(2), torch.zeros(2)], dim=1).double()
    expected_y = float(((y_out - c) ** 2).mean())
    assert float(terms["y"]) == pytest.approx(expected_y)
    # reconstruction: f^-1([z_out, y]) = [x1, y1, y2, y3] vs padded x [x1, x2, 0, 0]
    expected_rec = float(
        ((torch.cat([x[:, :1], c], 1) - torch.cat([x, torch.zeros(2, 2)], 1)) ** 2).mean()
    )
    assert float(terms["x_reconstruction"]) == pytest.approx(expected_rec)
    # backward: x-part of f^-1([z ~ N(0,1), c]) is [z, c_0]; replay the same random draws, in the
    # reference's order (noise of scale 0 is drawn all the same)
    torch.manual_seed(0)
    f64 = {"dtype": torch.float64}
    torch.randn(2, 2, **f64), torch.randn(2, 3, **f64)  # input padding, label noise
    z_fwd = torch.randn(2, 1, **f64)  # the z-MMD's prior sample
    torch.randn(2, 3, **f64), torch.randn(2, 1, **f64)  # fresh label noise, z perturbation
    z_back = torch.randn(2, 1, **f64)
    x_back = torch.cat([z_back, c[:, :1]], dim=1)
    assert float(terms["x_backward"]) == pytest.approx(mmd_numpy(x_back.numpy(), x.numpy(), WIDTHS))
    fake = torch.cat([x[:, :1], y_out], 1).numpy()
    real = torch.cat([z_fwd, c], 1).numpy()
    assert float(terms["z"]) == pytest.approx(mmd_numpy(fake, real, WIDTHS))
    total = (
        2 * expected_y
        + 5 * float(terms["z"])
        + 7 * 0.004 * float(terms["x_backward"])
        + 11 * expected_rec
    )
    assert float(terms["loss"]) == pytest.approx(total)


def test_forward_only_variant_computes_only_its_losses() -> None:
    inn = INN(2, 3, 2, n_blocks=1, hidden=4, losses=["y", "z"])
    with torch.no_grad():
        terms = inn.loss_terms(
            torch.randn(8, 2), torch.eye(3)[torch.arange(8) % 3], **inn.schedule(0)
        )
    assert set(terms) == {"loss", "y", "z", "ramp"}
    w = inn.weights
    assert float(terms["loss"]) == pytest.approx(
        w["y"] * float(terms["y"]) + w["z"] * float(terms["z"]), rel=1e-6
    )


def test_z_loss_gradient_does_not_reach_y_outputs() -> None:
    # L_z compares [z, y.detach()]: its gradient reaches the z-outputs of the forward pass and
    # not the y-outputs. Capture the network's output and read its gradient.
    torch.manual_seed(0)
    inn = INN(2, 3, 2, n_blocks=1, hidden=4, losses=["z"])
    captured = {}
    network_forward = inn.network.forward

    def forward(x, condition=None):
        out, log_det = network_forward(x, condition)
        out.retain_grad()
        captured["out"] = out
        return out, log_det

    inn.network.forward = forward
    terms = inn.loss_terms(
        torch.randn(16, 2), torch.eye(3)[torch.arange(16) % 3], **inn.schedule(0)
    )
    terms["loss"].backward()
    grad = captured["out"].grad
    assert grad[:, :2].abs().max() > 0  # z-outputs
    assert grad[:, 2:].abs().max() == 0  # y-outputs


def test_padding_outputs_enter_the_fit_loss() -> None:
    # total_dim 7 pads the output side with 2 slots; their fit target is padding noise (0 here).
    inn = INN(2, 3, 2, total_dim=7, n_blocks=1, hidden=4, y_noise=0.0, pad_noise=0.0)
    with torch.no_grad():
        for p in inn.network.blocks.parameters():
            p.zero_()
        n = inn.network.permutations
        inn.network.permutations.copy_(torch.arange(7).expand_as(n))
        inn.network.inverse_permutations.copy_(torch.arange(7).expand_as(n))
    x = torch.tensor([[3.0, 4.0]])
    c = torch.tensor([[1.0, 0.0, 0.0]])
    # out = [3, 4, 0, 0, 0, 0, 0]: after z come pad outputs [0, 0] and y_out [0, 0, 0]
    with torch.no_grad():
        terms = inn.loss_terms(x, c, **inn.schedule(0))
    assert float(terms["y"]) == pytest.approx(1.0 / 5)


def test_predict_and_sample_shapes_and_inverse_consistency() -> None:
    torch.manual_seed(0)
    inn = INN(2, 8, 2, n_blocks=2, hidden=8, sample_y_noise=0.0)
    assert inn.predict(torch.zeros(3, 2)).shape == (3, 8)
    cond = torch.eye(8)[1]
    z = torch.randn(4, 2)
    x = inn.sample(cond, z=z)
    assert x.shape == (4, 2)
    # f^-1 then f (padding of the sample kept) returns the requested y-outputs
    full = inn.network.inverse(torch.cat([z, cond.expand(4, -1)], 1))
    torch.testing.assert_close(full[:, :2], x)
    torch.testing.assert_close(inn.network(full)[0][:, 2:], cond.expand(4, -1), atol=1e-4, rtol=0)
    assert not hasattr(inn, "log_prob")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"losses": ["nope"]}, "subset"),
        ({"losses": []}, "subset"),
        ({"total_dim": 5}, "padding cannot be negative"),
        ({"weights": {"y": 1.0}}, "no weight"),
    ],
)
def test_bad_arguments_are_rejected(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        INN(2, 8, 2, n_blocks=1, hidden=4, **kwargs)


def test_ramp_rejects_nonpositive_length() -> None:
    with pytest.raises(ValueError, match="ramp_epochs"):
        backward_ramp(1, 0)
    assert math.isclose(backward_ramp(0, 1, start=0.5), 1.0)
