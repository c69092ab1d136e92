"""Every model, each usable on any (x, c): the invertible network they share and the three
conditional models built on it.

- :mod:`~replicate.models.flows`: :class:`InvertibleNetwork`, GLOW-style affine coupling blocks
  with fixed permutations (cross-checked against FrEIA in tests/test_flows.py).
- :mod:`~replicate.models.conditional_flow`: the paper's method, :class:`ConditionalFlow`, and the
  input handling every model shares (:func:`as_input`, :func:`sampling_inputs`).
- :mod:`~replicate.models.cinn`: the cINN baseline, :class:`ConditionalINN`.
- :mod:`~replicate.models.inn`: the INN baseline with its four losses, :class:`INN`.
- :mod:`~replicate.models.standardization`: the affine maps stored with a model's weights.
"""
