"""Generate and decode the cINN's evaluation samples, every class alike (rule
sample_latent_cinn)."""

from replicate.experiments.latent.baseline_stages import cinn_samples_stage
from replicate.runtime import run_stage

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
run_stage(
    snakemake,
    cinn_samples_stage,
    snakemake.input.cinn,
    snakemake.input.autoencoder,
    snakemake.params.settings,
    int(snakemake.wildcards.seed),
    snakemake.output[0],
)
