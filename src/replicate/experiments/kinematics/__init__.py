"""E4: the inverse-kinematics benchmark of Kruse, Ardizzone, Rother & Koethe (2021), a real inverse
problem with a continuous observation and a ground-truth posterior by rejection sampling.

- :mod:`~.problem`: the prior, the forward process (a planar arm on a vertical rail), the joint
  positions for drawing, and the rejection sampler that gives the reference posteriors;
- :mod:`~.metrics`: posterior distances between sample sets (kernel MMD, classifier two-sample
  test), re-simulation error and calibration;
- :mod:`~.settings`: the models (ours per ``eps``, the INN, the cINN) and what each trains under;
- :mod:`~.training`: every model trained on fresh simulator draws, and loaded back;
- :mod:`~.evaluation`: the reference files, each model's samples and scores, the metrics table;
- :mod:`~.figures`: the posterior figure (arms and end points) and ours against ``eps``.

The rules are in ``workflow/rules/kinematics.smk``.
"""
