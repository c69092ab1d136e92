"""The linear-Gaussian check: a continuous, noisy observation whose posterior is known in closed
form, to check the method beyond labels and to choose its ``eps`` (docs/eps.md).

- :mod:`~.problem`: x ~ N(0, I), y = A x + N(0, s^2 I), the exact posterior, and the scores of a
  model's posterior samples against it;
- :mod:`~.settings`: the models (ours per ``eps / s``, ours with eps learned, sbi's NPE) and
  what each run depends on;
- :mod:`~.training`: ours and NPE trained on the same simulations;
- :mod:`~.evaluation`: one run (train, then score on fresh observations), the mean ± std table,
  and NPE's fairness check against sbibm's published number;
- :mod:`~.stages`: the functions the rules (``workflow/rules/linear_gaussian.smk``) call.
"""
