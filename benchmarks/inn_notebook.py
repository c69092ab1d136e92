"""The INN baseline as its authors ran it: their 8-modes notebook on FrEIA, scored by our metrics.

The fairness check of the Gaussian-mixture comparison (SPEC section 2): before our INN is compared
with the method, the INN authors' own toy code must show what the INN reaches on this problem. The
reference is the notebook ``toy_8-modes.ipynb`` of vislearn/analyzing_inverse_problems (the same
cells as vislearn/FrEIA ``experiments/toy_8-modes``, commit 4a5955d). This module restates its
cells on FrEIA 0.2, changing only what that release needs (the graph returns ``(out, log_jac)``;
the permutations are gradient-free parameters, so the gradient clamp skips them):

- data cell and ``data.py``: 2**20 points, ``np.random.seed(0)``, the first 10,000 for testing;
- network cell: ``ndim_tot = 16``, ``subnet_fc`` = Linear(c_in, 512) - ReLU - Linear(512, c_out),
  8 ``GLOWCouplingBlock`` (clamp 2) each followed by ``PermuteRandom(seed=k)``;
- training-parameters cell: Adam(lr 1e-3, betas (0.8, 0.9), eps 1e-6, weight decay 2e-5),
  noise 0.1 (y) and 0.05 (padding), weights 3 / 300 / 400, 50 epochs of 8 iterations;
- ``train()``: :func:`reference_train_step`, then the elementwise gradient clamp at +-15;
- init cell: every trainable parameter ``0.05 * randn``;
- sampling cell: ``[z ~ N(0, I), zero padding, one-hot y + 0.1 noise]`` through the inverse.

``tests/test_inn_reference.py`` uses the same functions to check our INN against one step of it.
Run (a seed is ``torch.manual_seed(seed)`` before the network is built; ~7 minutes per seed on
one CPU core)::

    python benchmarks/inn_notebook.py --seeds 0 1 2 --out inn_notebook.csv

Each seed's row: forward accuracy on the pipeline's 4096 held-out points of that seed, and the
in-mode fraction and W2 of 4096 samples per label against the pipeline's exact samples of that
seed (:func:`replicate.experiments.gmm.evaluation.score_samples`), i.e. the numbers of
``gmm_metrics``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import FrEIA.framework as Ff
import FrEIA.modules as Fm
import numpy as np
import pandas as pd
import torch
from torch import nn

NDIM_TOT, NDIM_X, NDIM_Y, NDIM_Z = 16, 2, 8, 2
N_EPOCHS, N_ITS_PER_EPOCH, BATCH_SIZE = 50, 8, 1600
LR, L2_REG = 1e-3, 2e-5
Y_NOISE_SCALE, ZEROS_NOISE_SCALE = 1e-1, 5e-2
LAMBD_PREDICT, LAMBD_LATENT, LAMBD_REV = 3.0, 300.0, 400.0
MODES = [
    (-2.4142, 1.0),
    (-1.0, 2.4142),
    (1.0, 2.4142),
    (2.4142, 1.0),
    (2.4142, -1.0),
    (1.0, -2.4142),
    (-1.0, -2.4142),
    (-2.4142, -1.0),
]


def reference_mmd(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The notebook's ``MMD_multiscale``."""
    xx, yy, zz = torch.mm(x, x.t()), torch.mm(y, y.t()), torch.mm(x, y.t())
    rx = xx.diag().unsqueeze(0).expand_as(xx)
    ry = yy.diag().unsqueeze(0).expand_as(yy)
    dxx = rx.t() + rx - 2.0 * xx
    dyy = ry.t() + ry - 2.0 * yy
    dxy = rx.t() + ry - 2.0 * zz
    k_xx, k_yy, k_xy = torch.zeros(xx.shape), torch.zeros(xx.shape), torch.zeros(xx.shape)
    for a in [0.05, 0.2, 0.9]:
        k_xx += a**2 * (a**2 + dxx) ** -1
        k_yy += a**2 * (a**2 + dyy) ** -1
        k_xy += a**2 * (a**2 + dxy) ** -1
    return torch.mean(k_xx + k_yy - 2.0 * k_xy)


def reference_fit(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The notebook's ``fit``: mean squared error."""
    return torch.mean((output - target) ** 2)


def reference_train_step(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, i_epoch: int
) -> dict[str, torch.Tensor]:
    """The body of the notebook's ``train()`` for one batch, up to (not including) the clamp and
    the update: its random draws in its order, its two ``backward()`` calls.

    Returns the four loss terms and their weighted sum; the gradients are left in the model.
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
    output, _ = model(x)
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


def subnet_fc(c_in: int, c_out: int) -> nn.Module:
    """The notebook's subnet: one hidden layer of 512."""
    return nn.Sequential(nn.Linear(c_in, 512), nn.ReLU(), nn.Linear(512, c_out))


def reference_network(subnet_constructor=subnet_fc) -> Ff.GraphINN:
    """The notebook's network cell (``GraphINN`` is FrEIA 0.2's name of its ReversibleGraphNet)."""
    nodes = [Ff.InputNode(NDIM_TOT, name="input")]
    for k in range(8):
        nodes.append(
            Ff.Node(
                nodes[-1],
                Fm.GLOWCouplingBlock,
                {"subnet_constructor": subnet_constructor, "clamp": 2.0},
                name=f"coupling_{k}",
            )
        )
        nodes.append(Ff.Node(nodes[-1], Fm.PermuteRandom, {"seed": k}, name=f"permute_{k}"))
    nodes.append(Ff.OutputNode(nodes[-1], name="output"))
    return Ff.GraphINN(nodes, verbose=False)


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def reference_optimizer(params: list[nn.Parameter]) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=LR, betas=(0.8, 0.9), eps=1e-6, weight_decay=L2_REG)


def clamp_gradients(params: list[nn.Parameter]) -> None:
    """The notebook's ``p.grad.data.clamp_(-15.00, 15.00)`` over its parameters."""
    for p in params:
        p.grad.data.clamp_(-15.00, 15.00)


def notebook_data() -> tuple[torch.Tensor, torch.Tensor]:
    """``data.generate(labels='all', tot_dataset_size=2**20)``.

    Its ``np.random.seed(0)`` and global draws are the stream of a ``RandomState(0)``.
    """
    rng = np.random.RandomState(0)
    n_total = 2**20
    pos = rng.normal(size=(n_total, 2), scale=0.2)
    labels = np.zeros((n_total, 8))
    n = n_total // 8
    for i, v in enumerate(MODES):
        pos[i * n : (i + 1) * n, :] += v
        labels[i * n : (i + 1) * n, i] = 1.0
    shuffling = rng.permutation(n_total)
    return (
        torch.tensor(pos[shuffling], dtype=torch.float),
        torch.tensor(labels[shuffling], dtype=torch.float),
    )


def train_notebook(seed: int) -> tuple[Ff.GraphINN, float]:
    """The notebook's training, seeded; returns the model and the seconds per iteration."""
    torch.manual_seed(seed)
    pos, labels = notebook_data()
    train_loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(pos[10000:], labels[10000:]),
        batch_size=BATCH_SIZE,
        shuffle=True,
        drop_last=True,
    )
    model = reference_network()
    params = trainable_parameters(model)
    optimizer = reference_optimizer(params)
    for param in params:
        param.data = 0.05 * torch.randn_like(param)
    begin = time.perf_counter()
    for i_epoch in range(N_EPOCHS):
        model.train()
        for batch_idx, (x, y) in enumerate(train_loader):
            if batch_idx >= N_ITS_PER_EPOCH:
                break
            optimizer.zero_grad()
            reference_train_step(model, x, y, i_epoch)
            clamp_gradients(params)
            optimizer.step()
    return model, (time.perf_counter() - begin) / (N_EPOCHS * N_ITS_PER_EPOCH)


@torch.no_grad()
def notebook_samples(model: nn.Module, label: int, n: int) -> torch.Tensor:
    """The sampling cell: ``[z, zero padding, one-hot + 0.1 noise]`` through the inverse."""
    y = torch.eye(NDIM_Y)[label].expand(n, -1) + Y_NOISE_SCALE * torch.randn(n, NDIM_Y)
    y_samps = torch.cat([torch.randn(n, NDIM_Z), torch.zeros(n, NDIM_TOT - NDIM_Y - NDIM_Z), y], 1)
    return model(y_samps, rev=True)[0][:, :NDIM_X]


@torch.no_grad()
def score(model: nn.Module, seed: int, n: int = 4096) -> dict[str, float]:
    """Forward accuracy, in-mode fraction and W2 as ``gmm_metrics`` scores a run of ``seed``."""
    from replicate import metrics
    from replicate.experiments.gmm.evaluation import held_out_set, score_samples

    x, y = held_out_set("all", n, seed)
    padded = torch.cat([x, torch.zeros(len(x), NDIM_TOT - NDIM_X)], dim=1)
    accuracy = metrics.accuracy(model(padded)[0][:, -NDIM_Y:], y)
    torch.manual_seed(seed)
    samples = {label: notebook_samples(model, label, n).double() for label in range(8)}
    scores = score_samples("all", samples, seed)
    return {"accuracy": accuracy, **{k: scores[k] for k in ("in_mode_fraction", "w2")}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None, help="CSV to write (optional)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for seed in args.seeds:
        model, seconds = train_notebook(seed)
        rows.append({"seed": seed, **score(model, seed), "seconds_per_iteration": seconds})
        print(json.dumps(rows[-1]), flush=True)
    table = pd.DataFrame(rows)
    print(table.to_markdown(index=False, floatfmt=".4f"))
    if args.out is not None:
        table.to_csv(args.out, index=False)


if __name__ == "__main__":
    main()
