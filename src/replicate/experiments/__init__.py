"""One package per experiment: its problem and data, its models' settings, training, evaluation,
figures, and the stage functions its Snakemake rules call.

- :mod:`~replicate.experiments.gmm`: E1/E2, the 8-mode Gaussian mixture (Figures 5.1, 5.2);
- :mod:`~replicate.experiments.latent`: E3, the flow in an auto-encoder's latent space on MNIST and
  Fashion-MNIST (Figures 5.3, 5.4, Table 1), with the cINN and the judges beyond the paper;
- :mod:`~replicate.experiments.kinematics`: E4, the inverse-kinematics benchmark (Kruse et al.
  2021): ours at several eps, the INN and the cINN against rejection-sampling posteriors;
- :mod:`~replicate.experiments.linear_gaussian`: the closed-form check of a continuous condition
  and of the eps rule (docs/eps.md).

A new experiment is one folder here (see src/replicate/README.md) plus one
``workflow/rules/<name>.smk``.
"""
