"""Our INN at the reference configuration against the INN authors' own training step.

The reference is the 8-modes notebook of vislearn/analyzing_inverse_problems (the same cells as
vislearn/FrEIA ``experiments/toy_8-modes/toy_8-modes.ipynb``): its network cell (``ndim_tot = 16``,
``subnet_fc``, 8 ``GLOWCouplingBlock`` + ``PermuteRandom(seed=k)``), its init cell
(``param.data = 0.05*torch.randn_like(param)``), its ``train()`` step and its sampling cell,
reimplemented below on FrEIA 0.2 with only the API mends that release needs (the graph returns
``(out, log_jac)``). Our INN is built from ``config/config.yaml`` exactly as the pipeline builds
it, so a change of a loss term, a detach, a noise scale, a weight, the init or the optimiser in
the library or the config fails here.
"""

from __future__ import annotations

import copy
from pathlib import Path

import FrEIA.framework as Ff
import FrEIA.modules as Fm
import pytest
import torch
import yaml
from torch import nn

from replicate.gmm import GaussianMixture
from replicate.gmm_experiment import build_model
from replicate.gmm_models import training_settings
from replicate.training import make_optimizer

torch.set_num_threads(1)

CONFIG = Path(__file__).resolve().parents[1] / "config" / "config.yaml"

# The notebook's constants (training-parameters cell).
NDIM_TOT, NDIM_X, NDIM_Y, NDIM_Z = 16, 2, 8, 2
N_EPOCHS, Y_NOISE_SCALE, ZEROS_NOISE_SCALE = 50, 1e-1, 5e-2
LAMBD_PREDICT, LAMBD_LATENT, LAMBD_REV = 3.0, 300.0, 400.0
LR, L2_REG = 1e-3, 2e-5


def reference_mmd(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The notebook's ``MMD_multiscale``, as written there."""
    xx, yy, zz = torch.mm(x, x.t()), torch.mm(y, y.t()), torch.mm(x, y.t())
    rx = xx.diag().unsqueeze(0).expand_as(xx)
    ry = yy.diag().unsqueeze(0).expand_as(yy)
    dxx = rx.t() + rx - 2.0 * xx
    dyy = ry.t() + ry - 2.0 * yy
    dxy = rx.t() + ry - 2.0 * zz
    XX, YY, XY = torch.zeros(xx.shape), torch.zeros(xx.shape), torch.zeros(xx.shape)
    for a in [0.05, 0.2, 0.9]:
        XX += a**2 * (a**2 + dxx) ** -1
        YY += a**2 * (a**2 + dyy) ** -1
        XY += a**2 * (a**2 + dxy) ** -1
    return torch.mean(XX + YY - 2.0 * XY)


def reference_fit(input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return torch.mean((input - target) ** 2)


def reference_train_step(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, i_epoch: int
) -> dict[str, torch.Tensor]:
    """The body of the notebook's ``train()`` for one batch, up to (not including) the update.

    Returns the four terms and the two losses it calls ``backward()`` on; the gradients are left
    in the model's parameters as the notebook leaves them.
    """
    batch_size = x.shape[0]
    loss_factor = min(1.0, 2.0 * 0.002 ** (1.0 - (float(i_epoch) / N_EPOCHS)))
    y_clean = y.clone()
    pad_x = ZEROS_NOISE_SCALE * torch.randn(batch_size, NDIM_TOT - NDIM_X)
    pad_yz = ZEROS_NOISE_SCALE * torch.randn(batch_size, NDIM_TOT - NDIM_Y - NDIM_Z)
    y = y + Y_NOISE_SCALE * torch.randn(batch_size, NDIM_Y, dtype=torch.float)
    x, y = (
        torch.cat((x, pad_x), dim=1),
        torch.cat((torch.randn(batch_size, NDIM_Z), pad_yz, y), dim=1),
    )
    output, _ = model(x)  # FrEIA 0.2: (out, log_jac)
    y_short = torch.cat((y[:, :NDIM_Z], y[:, -NDIM_Y:]), dim=1)
    fit_y = reference_fit(output[:, NDIM_Z:], y[:, NDIM_Z:])
    output_block_grad = torch.cat((output[:, :NDIM_Z], output[:, -NDIM_Y:].data), dim=1)
    mmd_z = reference_mmd(output_block_grad, y_short)
    loss = LAMBD_PREDICT * fit_y + LAMBD_LATENT * mmd_z
    loss.backward()

    pad_yz = ZEROS_NOISE_SCALE * torch.randn(batch_size, NDIM_TOT - NDIM_Y - NDIM_Z)
    y = y_clean + Y_NOISE_SCALE * torch.randn(batch_size, NDIM_Y)
    orig_z_perturbed = output.data[:, :NDIM_Z] + Y_NOISE_SCALE * torch.randn(batch_size, NDIM_Z)
    y_rev = torch.cat((orig_z_perturbed, pad_yz, y), dim=1)
    y_rev_rand = torch.cat((torch.randn(batch_size, NDIM_Z), pad_yz, y), dim=1)
    output_rev, _ = model(y_rev, rev=True)
    output_rev_rand, _ = model(y_rev_rand, rev=True)
    mmd_back = reference_mmd(output_rev_rand[:, :NDIM_X], x[:, :NDIM_X])
    rec = reference_fit(output_rev, x)
    loss_rev = LAMBD_REV * loss_factor * mmd_back + LAMBD_PREDICT * rec
    loss_rev.backward()
    return {
        "y": fit_y,
        "z": mmd_z,
        "x_backward": mmd_back,
        "x_reconstruction": rec,
        "loss": loss + loss_rev,
    }


def reference_network(subnets: list[nn.Module]) -> Ff.GraphINN:
    """The notebook's network cell, its ``subnet_fc`` handing out the given subnets in turn."""
    handed = iter(subnets)

    def subnet_fc(c_in: int, c_out: int) -> nn.Module:
        subnet = next(handed)
        assert (subnet[0].in_features, subnet[-1].out_features) == (c_in, c_out)
        return subnet

    nodes = [Ff.InputNode(NDIM_TOT, name="input")]
    for k in range(8):
        nodes.append(
            Ff.Node(
                nodes[-1],
                Fm.GLOWCouplingBlock,
                {"subnet_constructor": subnet_fc, "clamp": 2.0},
                name=f"coupling_{k}",
            )
        )
        nodes.append(Ff.Node(nodes[-1], Fm.PermuteRandom, {"seed": k}, name=f"permute_{k}"))
    nodes.append(Ff.OutputNode(nodes[-1], name="output"))
    # GraphINN is FrEIA 0.2's name of the notebook's ReversibleGraphNet (same class, renamed).
    return Ff.GraphINN(nodes, verbose=False)


def reference_config() -> dict:
    return yaml.safe_load(CONFIG.read_text())["gmm"]


def our_inn(variant: str = "full", seed: int = 0) -> nn.Module:
    """Our INN exactly as the pipeline builds it on the `reference` network."""
    gmm = reference_config()
    return build_model(
        f"inn_{variant}", training_settings(gmm, f"inn_{variant}", "reference"), "all", seed
    )


def twin(inn: nn.Module) -> Ff.GraphINN:
    """The notebook's network holding copies of our weights, and our permutations set to its."""
    subnets = [copy.deepcopy(s) for b in inn.network.blocks for s in (b.subnet1, b.subnet2)]
    reference = reference_network(subnets)
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
    ours = inn.losses(x, y, iteration)
    ours["loss"].backward()
    torch.manual_seed(11)
    # The notebook's epoch of an iteration: 8 iterations per epoch.
    theirs = reference_train_step(reference, x, y.clone(), i_epoch=iteration // 8)

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
    their_opt = torch.optim.Adam(
        [pb for _, pb in pairs], lr=LR, betas=(0.8, 0.9), eps=1e-6, weight_decay=L2_REG
    )
    clamped = 0
    for i in range(3):
        torch.manual_seed(20 + i)
        # Scaled so that the clamp acts (this batch's own gradients stay below 15).
        (1e4 * inn.losses(x, y, i)["loss"]).backward()
        for pa, pb in pairs:
            pb.grad = pa.grad.clone()
            clamped += int((pa.grad.abs() > 15).sum())
        torch.nn.utils.clip_grad_value_(inn.parameters(), settings["grad_clip"])
        ours_opt.step()
        ours_opt.zero_grad()
        for _, pb in pairs:
            pb.grad.data.clamp_(-15.00, 15.00)
        their_opt.step()
        their_opt.zero_grad()
        for pa, pb in pairs:
            torch.testing.assert_close(pa, pb, rtol=0.0, atol=0.0)
    assert clamped > 0


def test_samples_are_drawn_as_the_notebooks_sampling_cell() -> None:
    inn = our_inn(seed=6)
    reference = twin(inn)
    label = torch.eye(8)[3]
    torch.manual_seed(7)
    with torch.no_grad():
        ours = inn.sample(label, n=256)
    torch.manual_seed(7)
    z = torch.randn(256, NDIM_Z)  # our draw order: z, then the label noise
    y_samps = label.expand(256, -1) + Y_NOISE_SCALE * torch.randn(256, NDIM_Y)
    y_samps = torch.cat(
        [z, ZEROS_NOISE_SCALE * torch.zeros(256, NDIM_TOT - NDIM_Y - NDIM_Z), y_samps], dim=1
    )
    with torch.no_grad():
        rev_x, _ = reference(y_samps, rev=True)
    torch.testing.assert_close(ours, rev_x[:, :NDIM_X], rtol=1e-5, atol=1e-6)
