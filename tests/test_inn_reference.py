"""Our INN at the reference configuration against the INN authors' own training step.

The reference is the 8-modes notebook of vislearn/analyzing_inverse_problems, restated on FrEIA 0.2
in ``benchmarks/inn_notebook.py`` (its network, init, ``train()`` step and sampling cells; see
that module for the cells and the API mends). Our INN is built from ``config/config.yaml``
exactly as the pipeline builds it, so a change of a loss term, a detach, a noise scale, a weight,
the init or the optimiser in the library or the config fails here.
"""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import FrEIA.modules as Fm
import pytest
import torch
import yaml
from torch import nn

from replicate.experiments.gmm.problem import GaussianMixture
from replicate.experiments.gmm.settings import training_settings
from replicate.experiments.gmm.training import gmm_model
from replicate.training import make_optimizer

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "config" / "config.yaml"
_spec = importlib.util.spec_from_file_location("inn_notebook", REPO / "benchmarks/inn_notebook.py")
notebook = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(notebook)


def reference_config() -> dict:
    return yaml.safe_load(CONFIG.read_text())["gmm"]


def our_inn(variant: str = "full", seed: int = 0) -> nn.Module:
    """Our INN exactly as the pipeline builds it on the `reference` network."""
    gmm = reference_config()
    return gmm_model(
        f"inn_{variant}", training_settings(gmm, f"inn_{variant}", "reference"), "all", seed
    )


def twin(inn: nn.Module) -> nn.Module:
    """The notebook's network holding copies of our weights, and our permutations set to its."""
    subnets = iter([copy.deepcopy(s) for b in inn.network.blocks for s in (b.subnet1, b.subnet2)])

    def handed_out(c_in: int, c_out: int) -> nn.Module:  # subnet_fc's shapes, our weights
        subnet = next(subnets)
        assert (subnet[0].in_features, subnet[-1].out_features) == (c_in, c_out)
        return subnet

    reference = notebook.reference_network(handed_out)
    permutes = [m for m in reference.modules() if isinstance(m, Fm.PermuteRandom)]
    with torch.no_grad():
        for k, permute in enumerate(permutes):
            inn.network.permutations[k].copy_(permute.perm)
            inn.network.inverse_permutations[k].copy_(permute.perm_inv)
    return reference


def assert_close_at_scale(a: torch.Tensor, b: torch.Tensor, rel: float = 1e-4) -> None:
    """Equal up to float32 rounding of the whole tensor: ``|a - b| <= rel * max|b|``.

    The two implementations sum the same products in other orders, so a gradient element near 0
    differs by the rounding of its larger neighbours, not of itself.
    """
    scale = float(b.abs().max())
    torch.testing.assert_close(a, b, rtol=0.0, atol=rel * scale + 1e-12)


def batch(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gm = GaussianMixture("all")
    x, labels = gm.sample(n, torch.Generator().manual_seed(seed))
    return x, gm.one_hot(labels)


def test_reference_layout_is_the_notebooks() -> None:
    inn = our_inn()
    assert (inn.total_dim, inn.data_dim, inn.latent_dim, inn.condition_dim) == (16, 2, 2, 8)
    assert len(inn.network.blocks) == 8
    for block in inn.network.blocks:
        for subnet in (block.subnet1, block.subnet2):
            # subnet_fc: Linear(c_in, 512) - ReLU - Linear(512, c_out)
            kinds = [type(m) for m in subnet]
            assert kinds == [nn.Linear, nn.ReLU, nn.Linear]
            assert subnet[0].out_features == 512
    assert inn.network.blocks[0].clamp == 2.0


def test_reference_permutations_are_the_notebooks_whatever_the_seed() -> None:
    # PermuteRandom(seed=k) in block k: one set of permutations for every run, ours included.
    reference = notebook.reference_network()
    theirs = [m.perm.long() for m in reference.modules() if isinstance(m, Fm.PermuteRandom)]
    assert len(theirs) == 8
    for model, seed in (("inn_full", 0), ("inn_full", 5), ("ours", 2)):
        gmm = reference_config()
        net = gmm_model(model, training_settings(gmm, model, "reference"), "all", seed).network
        for k, perm in enumerate(theirs):
            assert torch.equal(net.permutations[k], perm), (model, seed, k)


def test_reference_init_draws_every_trainable_parameter_with_std_0_05() -> None:
    inn = our_inn()
    trainable = [p for p in inn.parameters() if p.requires_grad]
    # The notebook's init loop covers the same parameters: those of its network.
    reference = twin(inn)
    assert sum(p.numel() for p in trainable) == sum(
        p.numel() for p in reference.parameters() if p.requires_grad
    )
    flat = torch.cat([p.detach().flatten() for p in trainable])
    assert abs(float(flat.std()) - 0.05) < 5e-4
    assert abs(float(flat.mean())) < 5e-4
    for p in trainable:  # biases included; PyTorch's default would give ~0.04-0.35 per tensor
        assert abs(float(p.detach().std()) - 0.05) < 0.02, p.shape
        assert abs(float(p.detach().mean())) < 0.03, p.shape


@pytest.mark.parametrize("iteration", [0, 100, 399])
def test_loss_terms_and_gradients_equal_the_notebooks_train_step(iteration: int) -> None:
    inn = our_inn(seed=3)
    reference = twin(inn)
    x, y = batch(64, seed=iteration)

    torch.manual_seed(11)
    ours = inn.loss_terms(x, y, **inn.schedule(iteration))
    ours["loss"].backward()
    torch.manual_seed(11)
    # The notebook's epoch of an iteration: 8 iterations per epoch.
    theirs = notebook.reference_train_step(reference, x, y.clone(), i_epoch=iteration // 8)

    for name in ("y", "z", "x_backward", "x_reconstruction", "loss"):
        torch.testing.assert_close(ours[name], theirs[name], rtol=1e-5, atol=1e-7, msg=name)
    # Detaches and weights show in the gradients (the losses alone would not tell).
    ours_subnets = [s for b in inn.network.blocks for s in (b.subnet1, b.subnet2)]
    their_subnets = [m for m in reference.modules() if isinstance(m, nn.Sequential)]
    assert len(their_subnets) == len(ours_subnets) == 16
    for a, b in zip(ours_subnets, their_subnets, strict=True):
        for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
            assert_close_at_scale(pa.grad, pb.grad)


def test_update_equals_the_notebooks_clamped_adam_step() -> None:
    """Same gradients in, same weights out: our optimiser config is the notebook's.

    The gradients are ours, handed to the notebook's update (elementwise clamp to +-15, then
    Adam(lr 1e-3, betas (0.8, 0.9), eps 1e-6, weight decay 2e-5)): Adam divides each gradient by
    its own size, so rounding-level gradients of two implementations would not compare.
    """
    inn = our_inn(seed=4)
    reference = twin(inn)
    x, y = batch(64, seed=5)
    settings = reference_config()["inn"]["optimizer"]
    ours_opt = make_optimizer(inn.parameters(), **settings)
    ours_subnets = [s for b in inn.network.blocks for s in (b.subnet1, b.subnet2)]
    their_subnets = [m for m in reference.modules() if isinstance(m, nn.Sequential)]
    pairs = [
        (pa, pb)
        for a, b in zip(ours_subnets, their_subnets, strict=True)
        for pa, pb in zip(a.parameters(), b.parameters(), strict=True)
    ]
    their_opt = notebook.reference_optimizer([pb for _, pb in pairs])
    clamped = 0
    for i in range(3):
        torch.manual_seed(20 + i)
        # Scaled so that the clamp acts (this batch's own gradients stay below 15).
        (1e4 * inn.loss_terms(x, y, **inn.schedule(i))["loss"]).backward()
        for pa, pb in pairs:
            pb.grad = pa.grad.clone()
            clamped += int((pa.grad.abs() > 15).sum())
        torch.nn.utils.clip_grad_value_(inn.parameters(), settings["grad_clip"])
        ours_opt.step()
        ours_opt.zero_grad()
        notebook.clamp_gradients([pb for _, pb in pairs])
        their_opt.step()
        their_opt.zero_grad()
        for pa, pb in pairs:
            torch.testing.assert_close(pa, pb, rtol=0.0, atol=0.0)
    assert clamped > 0


def test_samples_are_drawn_as_the_notebooks_sampling_cell(monkeypatch) -> None:
    inn = our_inn(seed=6)
    reference = twin(inn)
    label = 3
    torch.manual_seed(7)
    with torch.no_grad():
        ours = inn.sample(torch.eye(8)[label], n=256)
    torch.manual_seed(7)
    z, noise = torch.randn(256, 2), torch.randn(256, 8)  # our order: z, then the label noise
    # The notebook draws the label noise first: hand it the same two draws in its order.
    draws = iter([noise, z])
    monkeypatch.setattr(torch, "randn", lambda *shape, **kw: next(draws))
    theirs = notebook.notebook_samples(reference, label, 256)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
