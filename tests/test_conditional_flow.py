"""The method's loss and densities against closed forms, and its input checks."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import multivariate_normal

from replicate.cinn import ConditionalINN
from replicate.conditional_flow import ConditionalFlow
from replicate.inn import INN

torch.set_num_threads(1)


def identity_flow(data_dim: int, condition_dim: int, latent_dim: int, **kw) -> ConditionalFlow:
    """A flow whose network is exactly the identity: zero subnets, identity permutations."""
    flow = ConditionalFlow(data_dim, condition_dim, latent_dim, n_blocks=2, hidden=8, **kw)
    with torch.no_grad():
        for p in flow.network.blocks.parameters():
            p.zero_()
        n = flow.network.permutations
        flow.network.permutations.copy_(torch.arange(n.shape[1]).expand_as(n))
        flow.network.inverse_permutations.copy_(torch.arange(n.shape[1]).expand_as(n))
    return flow.double()


def test_log_prob_of_identity_flow_equals_closed_form() -> None:
    # D=3, M=2, K=3 -> padding P=2; identity maps [x, x0] to z = x, c_hat = x0.
    eps, sigma = 0.1, 0.05
    flow = identity_flow(3, 2, 3, eps=eps, sigma=sigma)
    x = torch.randn(6, 3, dtype=torch.float64)
    c = torch.randn(6, 2, dtype=torch.float64)
    expected = (
        multivariate_normal(mean=[0, 0, 0]).logpdf(x.numpy())
        + multivariate_normal(mean=[0, 0], cov=eps**2).logpdf((0 - c).numpy())
        # the padding's own density at zero is divided out
        - 2 * math.log(1 / math.sqrt(2 * math.pi * sigma**2))
    )
    torch.testing.assert_close(flow.log_prob(x, c), torch.as_tensor(expected))


def test_nll_is_the_paper_loss_on_the_identity_flow() -> None:
    eps = 0.2
    flow = identity_flow(2, 3, 1, eps=eps, sigma=0.0)  # P = 2, no padding noise
    x = torch.randn(5, 2, dtype=torch.float64)
    c = torch.randn(5, 3, dtype=torch.float64)
    # z = x[:, :1]; c_hat = [x[:, 1], 0, 0]
    c_hat = torch.cat([x[:, 1:], torch.zeros(5, 2, dtype=torch.float64)], dim=1)
    expected = 0.5 * x[:, 0] ** 2 + 0.5 * ((c_hat - c) ** 2).sum(1) / eps**2
    torch.testing.assert_close(flow.nll(x, c), expected)


def test_nll_and_log_prob_agree_up_to_constants_without_padding_noise() -> None:
    torch.manual_seed(0)
    flow = ConditionalFlow(2, 8, 2, eps=0.1, sigma=0.0, n_blocks=3, hidden=16).double()
    x = torch.randn(10, 2, dtype=torch.float64)
    c = torch.eye(8, dtype=torch.float64)[torch.arange(10) % 8]
    const = 0.5 * 10 * math.log(2 * math.pi) + 8 * math.log(0.1)
    torch.testing.assert_close(flow.nll(x, c) + const, -flow.log_prob(x, c))


def test_predict_and_encode_read_the_forward_pass() -> None:
    flow = identity_flow(2, 3, 1, eps=0.1, sigma=0.05)
    x = torch.randn(4, 2, dtype=torch.float64)
    torch.testing.assert_close(flow.encode(x), x[:, :1])
    torch.testing.assert_close(flow.predict(x)[:, 0], x[:, 1])
    assert torch.equal(flow.predict(x)[:, 1:], torch.zeros(4, 2, dtype=torch.float64))


def test_sample_inverts_from_given_z_and_noisy_condition() -> None:
    flow = identity_flow(2, 3, 1, eps=1e-9, sigma=0.05)
    c = torch.tensor([0.7, 0.0, 0.0], dtype=torch.float64)
    z = torch.tensor([[0.3], [-1.2]], dtype=torch.float64)
    out = flow.sample(c.expand(2, -1), z=z)
    torch.testing.assert_close(out, torch.tensor([[0.3, 0.7], [-1.2, 0.7]], dtype=torch.float64))


def test_sample_shapes() -> None:
    flow = ConditionalFlow(2, 8, 2, n_blocks=2, hidden=8)
    assert flow.sample(torch.eye(8)[3], n=11).shape == (11, 2)
    assert flow.sample(torch.eye(8)[:5]).shape == (5, 2)
    with pytest.raises(ValueError, match="needs n >= 1"):
        flow.sample(torch.eye(8)[3])
    with pytest.raises(ValueError, match="one sample each"):
        flow.sample(torch.eye(8)[:5], n=3)


# -- bad model input: ours, the cINN and the INN share one check (conditional_flow.check_input)
def _models() -> dict[str, torch.nn.Module]:
    return {
        "ours": ConditionalFlow(2, 8, 2, n_blocks=1, hidden=8),
        "cinn": ConditionalINN(2, 8, n_blocks=1, hidden=8),
        "inn": INN(2, 8, 2, n_blocks=1, hidden=8),
    }


X, C, Z = torch.zeros(3, 2), torch.eye(8)[:3], torch.zeros(3, 2)
# (model, call, argument): each public method with one argument to spoil; the others are good.
CALLS = [
    ("ours", lambda m, x: m.predict(x), "x"),
    ("ours", lambda m, x: m.encode(x), "x"),
    ("ours", lambda m, x: m.nll(x, C), "x"),
    ("ours", lambda m, c: m.nll(X, c), "condition"),
    ("ours", lambda m, x: m.log_prob(x, C), "x"),
    ("ours", lambda m, c: m.log_prob(X, c), "condition"),
    ("ours", lambda m, c: m.sample(c), "condition"),
    ("ours", lambda m, z: m.sample(C, z=z), "z"),
    ("cinn", lambda m, x: m.classify(x, torch.eye(8)), "x"),
    ("cinn", lambda m, c: m.classify(X, c), "candidates"),
    ("cinn", lambda m, x: m.nll(x, C), "x"),
    ("cinn", lambda m, c: m.nll(X, c), "condition"),
    ("cinn", lambda m, x: m.log_prob(x, C), "x"),
    ("cinn", lambda m, c: m.log_prob(X, c), "condition"),
    ("cinn", lambda m, c: m.sample(c), "condition"),
    ("cinn", lambda m, z: m.sample(C, z=z), "z"),
    ("inn", lambda m, x: m.predict(x), "x"),
    ("inn", lambda m, c: m.sample(c), "condition"),
    ("inn", lambda m, z: m.sample(C, z=z), "z"),
]
GOOD = {"x": X, "condition": C, "candidates": torch.eye(8), "z": Z}
# (fault, spoil a good float32 CPU tensor, what the message must say)
FAULTS = [
    ("shape", lambda t: t[:, :-1], r"{name} must have shape .*\(batch, {width}\), got"),
    ("float64", lambda t: t.double(), r"{name} must be .*model's dtype torch.float32, got .*64"),
    ("int", lambda t: t.long(), r"{name} must be a floating-point .*torch.float32, got .*int64"),
    ("device", lambda t: torch.empty_like(t, device="meta"), r"{name} is on meta .* on cpu"),
    ("nan", lambda t: t.index_put((torch.tensor(0),), torch.tensor(float("nan"))), "finite"),
    ("list", lambda t: t.tolist(), r"{name} must be a torch.Tensor, got list"),
]


@pytest.mark.parametrize(("fault", "spoil", "match"), FAULTS, ids=[f[0] for f in FAULTS])
@pytest.mark.parametrize(
    ("model", "call", "name"), CALLS, ids=[f"{c[0]}-{c[2]}-{i}" for i, c in enumerate(CALLS)]
)
def test_bad_input_raises_value_error_saying_what_was_expected(
    model: str, call, name: str, fault: str, spoil, match: str
) -> None:
    net = _models()[model]
    good = GOOD[name]
    call(net, good)  # the call itself is fine: only the spoiled argument can make it fail
    with pytest.raises(ValueError, match=match.format(name=name, width=good.shape[1])):
        call(net, spoil(good))


def test_input_for_a_model_on_another_device_is_rejected() -> None:
    flow = ConditionalFlow(2, 8, 2, n_blocks=1, hidden=8).to("meta")
    with pytest.raises(ValueError, match="x is on cpu but the model is on meta"):
        flow.predict(torch.randn(3, 2))


def test_a_float64_model_takes_float64_input() -> None:
    """The dtype expected is the model's, not float32 always."""
    flow = ConditionalFlow(2, 8, 2, n_blocks=1, hidden=8).double()
    assert flow.sample(torch.eye(8, dtype=torch.float64)[:3]).dtype == torch.float64
    with pytest.raises(ValueError, match="model's dtype torch.float64, got torch.float32"):
        flow.predict(X)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"data_dim": 12, "condition_dim": 8, "latent_dim": 2}, "dimensions do not add up"),
        ({"data_dim": 2, "condition_dim": 8, "latent_dim": 2, "eps": 0.0}, "eps must be > 0"),
        ({"data_dim": 2, "condition_dim": 8, "latent_dim": 2, "sigma": -1.0}, "sigma must be"),
    ],
)
def test_bad_settings_are_rejected(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ConditionalFlow(n_blocks=1, hidden=4, **kwargs)


def test_training_learns_a_conditional_gaussian() -> None:
    """A short fit makes the forward pass classify two well-separated Gaussians, and sampling
    (the inverse from [z, c + eps n]) draws from the requested one: the sampling maths, not only
    its consistency with the network's inverse."""
    from replicate.training import fit, make_optimizer

    torch.manual_seed(0)
    flow = ConditionalFlow(2, 2, 2, eps=0.1, sigma=0.05, n_blocks=3, hidden=32)
    labels = torch.randint(2, (512,))
    x = torch.randn(512, 2) * 0.3 + torch.tensor([[-2.0, 0.0], [2.0, 0.0]])[labels]
    c = torch.eye(2)[labels]
    opt = make_optimizer(flow.parameters(), lr=3e-3)
    result = fit(lambda i: {"loss": flow.nll(x, c).mean()}, opt, iterations=150, progress_every=0)
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    accuracy = (flow.predict(x).argmax(1) == labels).float().mean()
    assert accuracy > 0.95
    centres = torch.tensor([[-2.0, 0.0], [2.0, 0.0]])
    for k in (0, 1):
        samples = flow.sample(torch.eye(2)[k], n=500)
        near = ((samples - centres[k]).norm(dim=1) < 1.2).float().mean()
        assert near > 0.9, f"only {near:.2f} of the class-{k} samples lie near its centre"
