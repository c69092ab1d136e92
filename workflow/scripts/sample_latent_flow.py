"""Generate images of every class from one latent flow (rule sample_latent_flow)."""

from replicate.experiments.latent.stages import samples_stage
from replicate.runtime import run_stage

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
run_stage(
    snakemake,
    samples_stage,
    snakemake.input.flow,
    snakemake.input.autoencoder,
    snakemake.params.settings,
    int(snakemake.wildcards.seed),
    snakemake.output[0],
)
