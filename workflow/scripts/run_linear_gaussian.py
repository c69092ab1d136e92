"""Train and score one linear-Gaussian model at one noise std and seed (run_linear_gaussian)."""

from replicate.experiments.linear_gaussian.stages import run_linear_gaussian_model
from replicate.runtime import run_stage

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
run_stage(
    snakemake,
    run_linear_gaussian_model,
    model=snakemake.wildcards.model,
    noise_std=float(snakemake.wildcards.noise),
    seed=int(snakemake.wildcards.seed),
    settings=snakemake.params.settings,
    output=snakemake.output[0],
)
