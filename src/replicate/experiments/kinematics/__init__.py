"""E4: the inverse-kinematics benchmark of Kruse, Ardizzone, Rother & Koethe (2021), a real inverse
problem with a continuous observation and a ground-truth posterior by rejection sampling.

- :mod:`~.problem`: the prior, the forward process (a planar arm on a vertical rail), the joint
  positions for drawing, and the rejection sampler that gives the reference posteriors;
- :mod:`~.metrics`: posterior distances between sample sets (kernel MMD, classifier two-sample
  test), re-simulation error and calibration;
- :mod:`~.settings`: the models (ours per ``eps``, the INN, the cINN) and what each trains under;
- :mod:`~.training`: every model's training step on fresh simulator draws, and loading it back;
- :mod:`~.evaluation`: the reference files, sample files and their scores;
- :mod:`~.npe`: sbi's NPE, the field's standard amortised baseline, on the pairs ours sees;
- :mod:`~.figures`: the posterior figure (arms and end points) and ours against ``eps``;
- :mod:`~.stages`: the functions the rules (``workflow/rules/kinematics.smk``) call, one per rule.
"""
