"""E1/E2: the 8-mode Gaussian mixture with its exact posterior (paper 5.1, Figures 5.1 and 5.2).

- :mod:`~.problem`: the mixture, its label maps and the exact posterior;
- :mod:`~.settings`: each model's training settings and network from the config;
- :mod:`~.training`: building one model (ours, the INN variants, the cINN), its training step,
  and loading it back;
- :mod:`~.evaluation`: scores against the exact posterior and the metric table's maths;
- :mod:`~.figures`: the titles and training-curve panels of Figures 5.1, 5.2;
- :mod:`~.benchmark`: the speed of one training step per model;
- :mod:`~.stages`: the functions the rules (``workflow/rules/gmm*.smk``) call, one per rule.
"""
