"""Every model, each usable on any (x, c): the invertible network they share and the three
conditional models built on it.

- :mod:`~replicate.models.flows`: :class:`InvertibleNetwork`, GLOW-style affine coupling blocks
  with fixed permutations (cross-checked against FrEIA in tests/test_flows.py).
- :mod:`~replicate.models.base`: the interface every model follows, :class:`ConditionalModel`
  (training terms, sampling, density, standardisation), the network settings every model passes
  on (:class:`NetworkSettings`), and the input checks every model shares.
- :mod:`~replicate.models.conditional_flow`: the paper's method, :class:`ConditionalFlow`.
- :mod:`~replicate.models.cinn`: the cINN baseline, :class:`ConditionalINN`.
- :mod:`~replicate.models.inn`: the INN baseline with its four losses, :class:`INN`.
- :mod:`~replicate.models.standardization`: the affine maps stored with a model's weights.
- :mod:`~replicate.models.npe`: the field's standard baseline, ``sbi``'s neural posterior
  estimation (:func:`~replicate.models.npe.fit_npe`), on any simulator pairs; not an invertible
  network, so outside the interface above (it samples p(x | y) as the others do).
"""

from replicate.models.base import ConditionalModel, NetworkSettings
from replicate.models.cinn import ConditionalINN
from replicate.models.conditional_flow import ConditionalFlow
from replicate.models.flows import InvertibleNetwork
from replicate.models.inn import INN
from replicate.models.standardization import Standardization

__all__ = [
    "INN",
    "ConditionalFlow",
    "ConditionalINN",
    "ConditionalModel",
    "InvertibleNetwork",
    "NetworkSettings",
    "Standardization",
]
