"""replicate: Xiao, Yan & Amit (2019), conditional distributions with normalizing flows.

The library behind the Snakemake pipeline, usable on its own:

- :mod:`replicate.flows`: the invertible network (GLOW-style affine couplings).
- :mod:`replicate.conditional_flow`: the paper's method, :class:`ConditionalFlow`.
- :mod:`replicate.cinn`, :mod:`replicate.inn`: the baselines.
- :mod:`replicate.gmm`: the Gaussian-mixture problem with its exact posterior.
- :mod:`replicate.runtime`, :mod:`replicate.training`: seeds, devices, safe files, training.

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
    from replicate.cinn import ConditionalINN
    from replicate.conditional_flow import ConditionalFlow
    from replicate.flows import InvertibleNetwork

__all__ = ["ConditionalFlow", "ConditionalINN", "InvertibleNetwork"]
__version__ = "0.1.0"

# The classes load on first use (PEP 562): the workflow imports torch-free submodules such as
# replicate.config at every Snakemake start, which should not pay for importing torch.
_LAZY = {
    "ConditionalFlow": "replicate.conditional_flow",
    "ConditionalINN": "replicate.cinn",
    "InvertibleNetwork": "replicate.flows",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'replicate' has no attribute {name!r}")
