"""The 8-mode Gaussian mixture of the INN reference code (SPEC E1), with its exact posterior.

Because every density here is known in closed form, the learned models can be scored against the
truth: exact p(x | y), p(y | x), exact samples of p(x | y) and the Bayes-optimal accuracy.

Example:
    >>> import torch
    >>> gm = GaussianMixture("some")
    >>> x, labels = gm.sample(1000, torch.Generator().manual_seed(0))
    >>> x.shape, labels.max().item(), gm.n_labels
    (torch.Size([1000, 2]), 3, 4)
    >>> gm.posterior(x).sum(dim=1).allclose(torch.ones(1000, dtype=torch.float64))
    True
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["LABEL_MAPS", "MODE_CENTERS", "GaussianMixture"]

_C = 1.0 + math.sqrt(2.0)  # 2.4142: the reference code's octagon of modes
MODE_CENTERS = torch.tensor(
    [(-_C, 1.0), (-1.0, _C), (1.0, _C), (_C, 1.0), (_C, -1.0), (1.0, -_C), (-1.0, -_C), (-_C, -1.0)]
)
# Label of each mode. "some" lets several modes share a label, so p(x | y) is multimodal.
LABEL_MAPS: dict[str, tuple[int, ...]] = {
    "all": (0, 1, 2, 3, 4, 5, 6, 7),
    "some": (0, 0, 0, 0, 1, 1, 2, 3),
}


class GaussianMixture:
    """Equal-weight isotropic mixture on :data:`MODE_CENTERS`, labelled by ``label_map``.

    The condition is a one-hot vector of width :attr:`condition_dim` = 8 for both label maps, as in
    the INN reference code, so every model keeps the same 10-dimensional layout
    (x 2 + padding 8 = z 2 + y 8); with ``"some"`` the last four columns are always zero.

    Example:
        >>> gm = GaussianMixture("all")
        >>> gm.one_hot(torch.tensor([2])).tolist()
        [[0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]]
    """

    condition_dim = 8
    data_dim = 2

    def __init__(self, label_map: str = "all", std: float = 0.2) -> None:
        if label_map not in LABEL_MAPS:
            raise ValueError(f"unknown label map '{label_map}': use one of {sorted(LABEL_MAPS)}")
        self.label_map, self.std = label_map, std
        self.means = MODE_CENTERS.clone()
        self.mode_labels = torch.tensor(LABEL_MAPS[label_map])
        self.n_labels = int(self.mode_labels.max()) + 1
        # p(y): the share of modes carrying each label.
        counts = torch.bincount(self.mode_labels, minlength=self.n_labels).double()
        self.label_prior = counts / counts.sum()

    def one_hot(self, labels: Tensor) -> Tensor:
        """Float one-hot conditions of width :attr:`condition_dim`."""
        return torch.nn.functional.one_hot(labels, self.condition_dim).float()

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Draw ``n`` points; returns ``(x (n, 2), labels (n,))``."""
        modes = torch.randint(len(self.means), (n,), generator=generator)
        x = self.means[modes] + self.std * torch.randn(n, 2, generator=generator)
        return x, self.mode_labels[modes]

    def sample_conditional(self, label: int, n: int, generator: torch.Generator) -> Tensor:
        """Exact samples of p(x | y = label), shape (n, 2)."""
        candidates = torch.nonzero(self.mode_labels == label).flatten()
        if len(candidates) == 0:
            raise ValueError(f"label {label} does not exist in label map '{self.label_map}'")
        modes = candidates[torch.randint(len(candidates), (n,), generator=generator)]
        return self.means[modes] + self.std * torch.randn(n, 2, generator=generator)

    def mode_log_density(self, x: Tensor) -> Tensor:
        """log N(x; mu_k, std^2 I) for every mode k, shape (n, 8), in float64."""
        d2 = torch.cdist(x.double(), self.means.double()) ** 2
        return -0.5 * d2 / self.std**2 - math.log(2 * math.pi * self.std**2)

    def log_likelihood(self, x: Tensor) -> Tensor:
        """Exact log p(x | y = l) for every label l, shape (n, n_labels), float64."""
        log_mode = self.mode_log_density(x)
        out = []
        for label in range(self.n_labels):
            members = log_mode[:, self.mode_labels == label]
            out.append(torch.logsumexp(members, dim=1) - math.log(members.shape[1]))
        return torch.stack(out, dim=1)

    def posterior(self, x: Tensor) -> Tensor:
        """Exact p(y | x), shape (n, n_labels), float64."""
        return torch.softmax(self.log_likelihood(x) + self.label_prior.log(), dim=1)

    def bayes_accuracy(self, x: Tensor) -> float:
        """Bayes-optimal accuracy estimated on points ``x`` drawn from the mixture: E[max_y p(y|x)].

        Averaging the posterior's maximum (instead of counting hits of the Bayes classifier on
        sampled labels) gives the same expectation with lower variance.
        """
        return float(self.posterior(x).max(dim=1).values.mean())
