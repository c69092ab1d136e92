"""The method's loss and densities against closed forms, and its input checks."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

from replicate.models.cinn import ConditionalINN
from replicate.models.conditional_flow import ConditionalFlow
from replicate.models.inn import INN

torch.set_num_threads(1)


def identity_flow(data_dim: int, condition_dim: int, latent_dim: int, **kw) -> ConditionalFlow:
    """A flow whose network is exactly the identity: zero subnets, identity permutations."""
    with warnings.catch_warnings():  # some closed forms below use latent_dim < data_dim
        warnings.simplefilter("ignore", UserWarning)
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
    assert flow.sample(torch.eye(8)[:5], n=3).shape == (5, 3, 2)
    # One observation as users hold it, (1, M): n draws of it.
    assert flow.sample(torch.eye(8)[3:4], n=11).shape == (1, 11, 2)
    with pytest.raises(ValueError, match="needs n >= 1"):
        flow.sample(torch.eye(8)[3])
    for bad in (0, -2, 2.5, True):
        with pytest.raises(ValueError, match="n must be a positive integer"):
            flow.sample(torch.eye(8)[:2], n=bad)


@pytest.mark.parametrize("model", ["ours", "cinn", "inn"])
def test_batched_sampling_equals_sampling_each_condition_alone(model: str) -> None:
    """``sample(c_batch, n)`` (B, n, D) draws, for each row b, what ``sample(c_batch[b], n)``
    draws from the same z: the batch is the loop, without the loop."""
    net = _models()[model]
    c = torch.eye(8)[[1, 4, 6]]
    k = net.latent_dim if hasattr(net, "latent_dim") else net.data_dim
    z = torch.randn(3, 5, k)
    torch.manual_seed(1)
    batched = net.sample(c, n=5, z=z)
    assert batched.shape == (3, 5, 2)
    for b in range(3):
        torch.manual_seed(1)  # the same condition noise the batched call drew for row b
        noise = torch.randn(15, 8)[b * 5 : (b + 1) * 5]
        alone = _sample_with_noise(net, c[b], z[b], noise)
        torch.testing.assert_close(batched[b], alone)


def _sample_with_noise(net: torch.nn.Module, c: torch.Tensor, z: torch.Tensor, noise):
    """One condition's samples with the condition noise given (for the batched-sampling test)."""
    if isinstance(net, ConditionalINN):
        return net.sample(c, z=z)
    gen_state = torch.get_rng_state()
    real_randn_like = torch.randn_like
    torch.randn_like = lambda t, **kw: noise.to(t)
    try:
        return net.sample(c, z=z)
    finally:
        torch.randn_like = real_randn_like
        torch.set_rng_state(gen_state)


# -- bad model input: ours, the cINN and the INN share one check (conditional_flow.as_input)
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
CALL_IDS = [f"{c[0]}-{c[2]}-{i}" for i, c in enumerate(CALLS)]
GOOD = {"x": X, "condition": C, "candidates": torch.eye(8), "z": Z}
# (fault, spoil a good float32 CPU tensor, what the message must say)
FAULTS = [
    ("shape", lambda t: t[:, :-1], r"{name} must have shape .*\(batch, {width}\), got"),
    ("scalar", lambda t: t[0, 0], r"{name} must have shape"),
    ("complex", lambda t: t.to(torch.complex64), r"{name} must hold real numbers"),
    ("device", lambda t: torch.empty_like(t, device="meta"), r"{name} is on meta .* on cpu"),
    ("nan", lambda t: t.index_put((torch.tensor(0),), torch.tensor(float("nan"))), "finite"),
    ("text", lambda t: "zeros", r"{name} must be a torch.Tensor or a numpy array .*, got str"),
    ("object", lambda t: object(), r"{name} must be a torch.Tensor or a numpy array .*got object"),
]
# (form, convert a good float32 CPU tensor into what a user may hold): accepted, same numbers.
CONVERSIONS = [
    ("float64", lambda t: t.double()),
    ("int64", lambda t: t.long()),
    ("numpy", lambda t: t.numpy()),
    ("numpy-float64", lambda t: t.double().numpy()),
    ("list", lambda t: t.tolist()),
]


@pytest.mark.parametrize(("fault", "spoil", "match"), FAULTS, ids=[f[0] for f in FAULTS])
@pytest.mark.parametrize(("model", "call", "name"), CALLS, ids=CALL_IDS)
def test_bad_input_raises_value_error_saying_what_was_expected(
    model: str, call, name: str, fault: str, spoil, match: str
) -> None:
    net = _models()[model]
    good = GOOD[name]
    call(net, good)  # the call itself is fine: only the spoiled argument can make it fail
    with pytest.raises(ValueError, match=match.format(name=name, width=good.shape[1])):
        call(net, spoil(good))


@pytest.mark.parametrize(("form", "convert"), CONVERSIONS, ids=[c[0] for c in CONVERSIONS])
@pytest.mark.parametrize(("model", "call", "name"), CALLS, ids=CALL_IDS)
def test_numpy_and_other_dtypes_are_converted_to_the_models_dtype(
    model: str, call, name: str, form: str, convert
) -> None:
    net = _models()[model]
    good = GOOD[name]
    torch.manual_seed(0)
    want = call(net, good)
    torch.manual_seed(0)
    got = call(net, convert(good))
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_input_for_a_model_on_another_device_is_rejected() -> None:
    flow = ConditionalFlow(2, 8, 2, n_blocks=1, hidden=8).to("meta")
    with pytest.raises(ValueError, match="x is on cpu but the model is on meta"):
        flow.predict(torch.randn(3, 2))


def test_a_float64_model_works_in_float64() -> None:
    """The dtype inputs are converted to is the model's, not float32 always."""
    flow = ConditionalFlow(2, 8, 2, n_blocks=1, hidden=8).double()
    assert flow.sample(torch.eye(8, dtype=torch.float64)[:3]).dtype == torch.float64
    assert flow.predict(X).dtype == torch.float64
    assert flow.sample(np.eye(8)[:3]).dtype == torch.float64


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"data_dim": 12, "condition_dim": 8, "latent_dim": 2}, "dimensions do not add up"),
        ({"data_dim": 2, "condition_dim": 8, "latent_dim": 2, "eps": 0.0}, "eps must be > 0"),
        ({"data_dim": 2, "condition_dim": 8, "latent_dim": 2, "sigma": -1.0}, "sigma must be"),
        ({"data_dim": 2, "condition_dim": 8, "latent_dim": 0}, "latent_dim must be >= 1"),
        ({"data_dim": 2, "condition_dim": 3, "latent_dim": 2, "eps": [0.1, 0.2]}, "one per"),
        ({"data_dim": 2, "condition_dim": 2, "latent_dim": 2, "eps": [0.1, -0.2]}, "eps must"),
        ({"data_dim": 0, "condition_dim": 2, "latent_dim": 2}, "data_dim must be >= 1"),
    ],
)
def test_bad_settings_are_rejected(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ConditionalFlow(n_blocks=1, hidden=4, **kwargs)


def test_latent_dim_below_data_dim_warns_with_the_reason_and_the_padding() -> None:
    with pytest.warns(UserWarning, match=r"latent_dim \(1\) < data_dim \(3\).*padding 0"):
        flow = ConditionalFlow(3, 2, 1, n_blocks=1, hidden=4)
    assert flow.pad_dim == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ConditionalFlow(3, 2, 3, n_blocks=1, hidden=4).pad_dim == 2
    assert "padding (2)" in repr(ConditionalFlow(3, 2, 3, n_blocks=1, hidden=4))


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


# -- eps learned or annealed (issue 28) -----------------------------------------------------------
def test_learned_eps_keeps_the_log_eps_term_and_its_density_is_a_fixed_eps_flows() -> None:
    """With eps learned, the loss is the fixed-eps loss at the current eps plus sum(log eps)
    (standardised units): the full Gaussian NLL of c_hat, whose minimiser in eps is the RMS
    residual; and log_prob is that of a fixed-eps flow with the same weights at that eps."""
    torch.manual_seed(0)
    learned = ConditionalFlow(
        3, 2, 3, eps=[0.2, 0.5], learn_eps=True, eps_min=0.05, n_blocks=2, hidden=8
    )
    learned.fit_standardization(torch.randn(200, 3), 2 * torch.randn(200, 2))
    eps = learned.eps_now().detach()
    torch.testing.assert_close(eps, torch.tensor([0.2, 0.5]))
    fixed = ConditionalFlow(3, 2, 3, eps=eps.tolist(), n_blocks=2, hidden=8)
    state = learned.state_dict()
    fixed.load_state_dict(
        {k: v for k, v in state.items() if k not in ("log_eps_excess", "eps_floor")}
    )
    x, c = torch.randn(16, 3), torch.randn(16, 2)
    log_eps = torch.log(eps / learned.c_standardization.scale).sum()
    torch.manual_seed(1)
    nll_learned = learned.nll(x, c)
    torch.manual_seed(1)
    nll_fixed = fixed.nll(x, c)
    torch.testing.assert_close(nll_learned, nll_fixed + log_eps)
    torch.testing.assert_close(learned.log_prob(x, c), fixed.log_prob(x, c))
    assert set(learned.loss_terms(x, c)) == {"loss", "eps"}


def test_learned_eps_stays_above_its_floor_and_survives_a_save_and_load() -> None:
    flow = ConditionalFlow(2, 1, 2, eps=0.3, learn_eps=True, eps_min=0.1, n_blocks=1, hidden=4)
    with torch.no_grad():
        flow.log_eps_excess.fill_(-100.0)  # as far down as training could push it
    assert float(flow.eps_now()) == pytest.approx(0.1)
    again = ConditionalFlow(2, 1, 2, eps=0.3, learn_eps=True, eps_min=0.1, n_blocks=1, hidden=4)
    again.load_state_dict(flow.state_dict())
    assert float(again.eps_now()) == pytest.approx(0.1)
    assert "log_eps_excess" in dict(flow.named_parameters())  # the optimiser trains it


def test_learned_eps_given_no_start_begins_at_the_observations_std() -> None:
    flow = ConditionalFlow.for_observations(2, 2, n_blocks=1, hidden=4)
    y = torch.randn(500, 2) * torch.tensor([0.5, 4.0])
    flow.fit_standardization(torch.randn(500, 2), y)
    torch.testing.assert_close(flow.eps_now().detach(), y.std(0), rtol=1e-5, atol=1e-6)


def test_annealed_eps_reaches_its_target_and_trains_with_the_scheduled_value() -> None:
    flow = ConditionalFlow(
        2, 1, 2, eps=0.01, anneal_from=1.0, anneal_iterations=10, n_blocks=1, hidden=4
    )
    values = [float(flow.schedule(i)["eps"][0]) for i in range(12)]
    assert values[0] == pytest.approx(1.0) and values[10] == values[11] == pytest.approx(0.01)
    assert all(a > b for a, b in zip(values[:10], values[1:11], strict=True))
    x, c = torch.randn(8, 2), torch.randn(8, 1)
    torch.manual_seed(0)
    start = flow.loss_terms(x, c, **flow.schedule(0))
    reference = ConditionalFlow(2, 1, 2, eps=1.0, n_blocks=1, hidden=4)
    weights = {k: v for k, v in flow.state_dict().items() if not k.startswith("eps_")}
    reference.load_state_dict(weights, strict=False)  # its own eps, 1.0
    torch.manual_seed(0)
    torch.testing.assert_close(start["loss"], reference.nll(x, c).mean())
    assert float(start["eps"]) == pytest.approx(1.0)
    assert float(flow.eps_now()) == pytest.approx(0.01)  # sampling and log_prob: the target


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"eps": None}, "needs learn_eps"),
        ({"eps": 0.1, "learn_eps": True, "eps_min": 0.2}, "must start above eps_min"),
        ({"eps": 0.1, "learn_eps": True, "anneal_from": 1.0, "anneal_iterations": 5}, "not both"),
        ({"eps": 0.1, "anneal_from": 1.0}, "anneal_iterations must be >= 1"),
        ({"eps": 0.1, "learn_eps": True, "eps_min": -1.0}, "eps_min must be >= 0"),
    ],
)
def test_bad_eps_options_are_refused_naming_them(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ConditionalFlow(2, 1, 2, n_blocks=1, hidden=4, **kwargs)
