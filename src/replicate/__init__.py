"""replicate: Xiao, Yan & Amit (2019), conditional distributions with normalizing flows.

The library behind the Snakemake pipeline, usable on its own (src/replicate/README.md says where
things go):

- :mod:`replicate.models`: the invertible network and every model; the paper's method is
  :class:`ConditionalFlow`, the baselines :class:`ConditionalINN` and the INN.
- :mod:`replicate.experiments`: one package per experiment (the Gaussian mixture, the latent
  flow, the linear-Gaussian check of continuous conditions).
- :mod:`replicate.training`, :mod:`replicate.metrics`, :mod:`replicate.plots`,
  :mod:`replicate.data`, :mod:`replicate.runtime`, :mod:`replicate.config`: shared by all.

Example:
    >>> import torch
    >>> from replicate import ConditionalFlow
    >>> flow = ConditionalFlow(data_dim=2, condition_dim=8, latent_dim=2, n_blocks=2, hidden=16)
    >>> flow.sample(torch.eye(8)[0], n=3).shape
    torch.Size([3, 2])
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from replicate.models.cinn import ConditionalINN
    from replicate.models.conditional_flow import ConditionalFlow
    from replicate.models.flows import InvertibleNetwork

__all__ = ["ConditionalFlow", "ConditionalINN", "InvertibleNetwork"]
__version__ = "0.1.0"

# The classes load on first use (PEP 562): the workflow imports torch-free submodules such as
# replicate.config at every Snakemake start, which should not pay for importing torch.
_LAZY = {
    "ConditionalFlow": "replicate.models.conditional_flow",
    "ConditionalINN": "replicate.models.cinn",
    "InvertibleNetwork": "replicate.models.flows",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'replicate' has no attribute {name!r}")
