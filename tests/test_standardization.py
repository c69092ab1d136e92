"""Standardisation inside the models: closed forms on identity networks, autograd change of
variables on trained-looking ones, and the maps saved with the weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import norm

from replicate.checkpoints import model_tensors, restore_model
from replicate.models.cinn import ConditionalINN
from replicate.models.conditional_flow import ConditionalFlow
from replicate.models.flows import standard_normal_log_prob
from replicate.models.inn import INN, mmd_multiscale
from replicate.models.standardization import Standardization

torch.set_num_threads(1)
SHIFT_X, SCALE_X = torch.tensor([10.0, -3.0], dtype=torch.float64), torch.tensor([4.0, 0.5])
SHIFT_C, SCALE_C = torch.tensor([1.0, 2.0], dtype=torch.float64), torch.tensor([3.0, 0.2])


def _identity(model: torch.nn.Module) -> torch.nn.Module:
    """Zero subnets and identity permutations: the network is exactly the identity map."""
    with torch.no_grad():
        for p in model.network.blocks.parameters():
            p.zero_()
        perms = model.network.permutations
        ident = torch.arange(perms.shape[1]).expand_as(perms)
        perms.copy_(ident)
        model.network.inverse_permutations.copy_(ident)
    return model.double()


def _standardized(model: torch.nn.Module) -> torch.nn.Module:
    model.x_standardization.set(SHIFT_X, SCALE_X.double())
    model.c_standardization.set(SHIFT_C, SCALE_C.double())
    return model


def test_standardization_round_trip_and_fit() -> None:
    data = torch.randn(1000, 3, dtype=torch.float64) * torch.tensor([1.0, 5.0, 0.1]) + 7
    s = Standardization(3).double().fit(data)
    u = s(data)
    np.testing.assert_allclose(u.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(u.std(0), 1, atol=1e-12)
    torch.testing.assert_close(s.inverse(u), data)
    assert Standardization(3).is_identity and not s.is_identity
    with pytest.raises(ValueError, match=r"coordinates \[1\] are constant"):
        Standardization(2).fit(torch.tensor([[0.0, 1.0], [1.0, 1.0]]))
    with pytest.raises(ValueError, match="shape"):
        Standardization(2).set(torch.zeros(3), torch.ones(3))


def test_flow_log_prob_with_standardization_is_the_closed_form() -> None:
    """Identity network, D = K = 2, M = 2 (padding 2, sigma 0): z = (x - m) / s, and c_hat = x0 = 0
    in standardised units, where the condition is c_s = (c - m_c) / s_c and eps (given in c's
    units) is eps / s_c: p([x, 0] | c) = N(x; m, diag s^2) * N(0; c_s, diag (eps / s_c)^2)."""
    eps = torch.tensor([0.3, 0.05])
    flow = _standardized(_identity(ConditionalFlow(2, 2, 2, eps=eps.tolist(), sigma=0.0)))
    x = torch.randn(7, 2, dtype=torch.float64) * 3
    c = torch.randn(7, 2, dtype=torch.float64)
    want = norm.logpdf(x, SHIFT_X, SCALE_X.double()).sum(1)
    scale_c = SCALE_C.double()
    want = want + norm.logpdf(0.0, (c - SHIFT_C) / scale_c, eps.double() / scale_c).sum(1)
    torch.testing.assert_close(flow.log_prob(x, c), torch.as_tensor(want))
    # The training loss is the same density up to the dropped 2*pi and eps constants.
    const = 0.5 * 4 * np.log(2 * np.pi) + float(torch.log(eps.double() / scale_c).sum())
    torch.testing.assert_close(flow.nll(x, c) + const, -flow.log_prob(x, c))
    # predict reads c_hat back in the condition's units: the shift of c.
    torch.testing.assert_close(flow.predict(x), SHIFT_C.expand(7, -1))


def test_flow_sampling_undoes_the_standardization() -> None:
    flow = _standardized(_identity(ConditionalFlow(2, 2, 2, eps=0.1, sigma=0.0)))
    samples = flow.sample(torch.zeros(2, dtype=torch.float64), n=20000)
    np.testing.assert_allclose(samples.mean(0), SHIFT_X, atol=0.1)
    np.testing.assert_allclose(samples.std(0), SCALE_X, rtol=0.03)


@pytest.mark.parametrize("model", ["ours", "cinn"])
def test_log_prob_is_the_change_of_variables_of_the_whole_map(model: str) -> None:
    """On a random (non-identity) network with standardisation, log_prob equals the density
    computed by autograd: the Jacobian of raw x -> network output, nothing left out."""
    torch.manual_seed(3)
    if model == "ours":
        net = ConditionalFlow(2, 2, 2, eps=[0.2, 0.4], sigma=0.0, n_blocks=3, hidden=16)
    else:
        net = ConditionalINN(2, 2, n_blocks=3, hidden=16)
    net = _standardized(net.double())
    with torch.no_grad():  # a network far from the identity
        for p in net.network.blocks.parameters():
            p.normal_(0.0, 0.3)
    x = torch.randn(4, 2, dtype=torch.float64) * 2
    c = torch.randn(4, 2, dtype=torch.float64)
    got = net.log_prob(x, c)
    for i in range(4):
        cs = (c[i] - SHIFT_C) / SCALE_C.double()
        if model == "ours":
            # The map [x, x0] -> [z, c_hat] at x0 = 0; the padding's directions are those of x0.
            def full(v: torch.Tensor) -> torch.Tensor:
                xs = (v[:2] - SHIFT_X) / SCALE_X.double()
                return net.network(torch.cat([xs, v[2:]])[None])[0][0]

            v = torch.cat([x[i], torch.zeros(2, dtype=torch.float64)])
            out = full(v)
            jac = torch.autograd.functional.jacobian(full, v)
            eps_s = torch.tensor([0.2, 0.4], dtype=torch.float64) / SCALE_C.double()
            want = (
                standard_normal_log_prob(out[None, :2])[0]
                + standard_normal_log_prob(((out[2:] - cs) / eps_s)[None])[0]
                - torch.log(eps_s).sum()
                + torch.linalg.slogdet(jac)[1]
            )
        else:

            def full(v: torch.Tensor, cs: torch.Tensor = cs) -> torch.Tensor:
                xs = (v - SHIFT_X) / SCALE_X.double()
                return net.network(xs[None], cs[None])[0][0]

            jac = torch.autograd.functional.jacobian(full, x[i])
            want = standard_normal_log_prob(full(x[i])[None])[0] + torch.linalg.slogdet(jac)[1]
        torch.testing.assert_close(got[i], want)


@pytest.mark.parametrize("model", ["ours", "cinn"])
def test_standardization_is_saved_with_the_weights(model: str) -> None:
    make = {
        "ours": lambda: ConditionalFlow(2, 2, 2, n_blocks=1, hidden=4),
        "cinn": lambda: ConditionalINN(2, 2, n_blocks=1, hidden=4),
    }[model]
    a = make()
    a.fit_standardization(torch.randn(50, 2) * 5 + 3, torch.randn(50, 2) + 1)
    b = make()
    restore_model(b, model_tensors(a))
    x, c = torch.randn(6, 2), torch.randn(6, 2)
    torch.testing.assert_close(b.log_prob(x, c), a.log_prob(x, c), rtol=0, atol=0)
    assert not b.x_standardization.is_identity and not b.c_standardization.is_identity


def test_an_unfitted_standardization_changes_nothing() -> None:
    """Identity maps leave every number of a model as without them (to the bit)."""
    torch.manual_seed(0)
    flow = ConditionalFlow(2, 3, 2, n_blocks=2, hidden=8)
    x, c = torch.randn(5, 2), torch.randn(5, 3)
    y, log_det = flow.network(torch.cat([x, torch.zeros(5, 3)], dim=1))
    assert torch.equal(flow.encode(x), y[:, :2])
    assert torch.equal(flow.predict(x), y[:, 2:])
    want = (
        standard_normal_log_prob(y[:, :2])
        + standard_normal_log_prob((y[:, 2:] - c) / 0.1)
        - 3 * torch.log(torch.tensor(0.1))
        + log_det
        + 0.5 * 3 * torch.log(torch.tensor(2 * torch.pi * 0.05**2))
    )
    torch.testing.assert_close(flow.log_prob(x, c), want)


def test_inn_with_standardization_is_the_plain_inn_on_standardized_data() -> None:
    """The INN's four losses, sampling and prediction with standardisation equal those of the
    same network without it, fed data standardised by hand, with the noise stds divided by y's
    scale (they are in y's units) and the outputs mapped back by hand. Layout of E4:
    [x (4)] <-> [z (2), y (2)], no padding."""
    torch.manual_seed(0)
    inn = INN(4, 2, 2, n_blocks=2, hidden=8, y_noise=0.3, sample_y_noise=0.2).double()
    shift_x = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    scale_x = torch.tensor([0.25, 2.0, 0.5, 4.0], dtype=torch.float64)
    x = torch.randn(64, 4, dtype=torch.float64) * scale_x + shift_x
    c = torch.randn(64, 2, dtype=torch.float64) * SCALE_C + SHIFT_C
    inn.x_standardization.set(shift_x, scale_x)
    inn.c_standardization.set(SHIFT_C, SCALE_C.double())
    u, v = (x - shift_x) / scale_x, (c - SHIFT_C) / SCALE_C
    torch.manual_seed(1)
    got = inn.loss_terms(x, c, **inn.schedule(5))
    torch.manual_seed(1)
    want = _plain_inn_losses(inn, u, v, 5, noise=0.3 / SCALE_C)
    for name in ("loss", "y", "z", "x_backward", "x_reconstruction"):
        torch.testing.assert_close(got[name], want[name], msg=name)
    torch.manual_seed(2)
    samples = inn.sample(c[:3], n=4)
    torch.manual_seed(2)
    y = v[:3].repeat_interleave(4, 0)
    z = torch.randn(12, 2, dtype=torch.float64)
    y = y + 0.2 / SCALE_C * torch.randn_like(y)
    by_hand = inn.network.inverse(torch.cat([z, y], dim=1)) * scale_x + shift_x
    torch.testing.assert_close(samples, by_hand.reshape(3, 4, 4))
    predicted = inn.network(u)[0][:, 2:] * SCALE_C + SHIFT_C
    torch.testing.assert_close(inn.predict(x), predicted)


def _plain_inn_losses(
    inn: INN, u: torch.Tensor, v: torch.Tensor, iteration: int, noise: torch.Tensor
) -> dict[str, torch.Tensor]:
    """The INN's losses written out for the layout without padding ([x 4] <-> [z 2, y 2]), in
    the reference's order of random draws, on already standardised data."""
    n = len(u)
    torch.randn(n, 0, dtype=u.dtype), torch.randn(n, 0, dtype=u.dtype)  # the empty paddings
    y_noisy = v + noise * torch.randn(n, 2, dtype=u.dtype)
    z_prior = torch.randn(n, 2, dtype=u.dtype)
    out, _ = inn.network(u)
    terms = {"y": ((out[:, 2:] - y_noisy) ** 2).mean()}
    fake = torch.cat([out[:, :2], out[:, 2:].detach()], dim=1)
    terms["z"] = mmd_multiscale(fake, torch.cat([z_prior, y_noisy], dim=1), inn.mmd_widths)
    torch.randn(n, 0, dtype=u.dtype)
    y_fresh = v + noise * torch.randn(n, 2, dtype=u.dtype)
    z_near = out[:, :2].detach() + 0.3 * torch.randn(n, 2, dtype=u.dtype)
    z_rand = torch.randn(n, 2, dtype=u.dtype)
    x_rec = inn.network.inverse(torch.cat([z_near, y_fresh], dim=1))
    terms["x_reconstruction"] = ((x_rec - u) ** 2).mean()
    x_rand = inn.network.inverse(torch.cat([z_rand, y_fresh], dim=1))
    terms["x_backward"] = mmd_multiscale(x_rand, u, inn.mmd_widths)
    ramp = inn.ramp(iteration)
    w = inn.weights
    terms["loss"] = (
        w["y"] * terms["y"]
        + w["z"] * terms["z"]
        + w["x_backward"] * ramp * terms["x_backward"]
        + w["x_reconstruction"] * terms["x_reconstruction"]
    )
    return terms
