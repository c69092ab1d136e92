"""E4: the inverse-kinematics benchmark of Kruse, Ardizzone, Rother & Koethe (2021), a real inverse
problem with a continuous observation and a ground-truth posterior by rejection sampling.

- :mod:`~.problem`: the prior, the forward process (a planar arm on a vertical rail), the joint
  positions for drawing, and the rejection sampler that gives the reference posteriors;
- :mod:`~.metrics`: posterior distances between sample sets (kernel MMD, classifier two-sample
  test), re-simulation error and calibration.

The pipeline rules (workflow/rules/kinematics.smk), the models' settings and the figures follow
(issue 15).
"""
