"""Standardisation inside the models: closed forms on identity networks, autograd change of
variables on trained-looking ones, and the maps saved with the weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import norm

from replicate.models.cinn import ConditionalINN
from replicate.models.conditional_flow import ConditionalFlow
from replicate.models.flows import standard_normal_log_prob
from replicate.models.standardization import Standardization
from replicate.training import model_tensors, restore_model

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
