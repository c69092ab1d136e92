"""Generate images of every class from one latent flow (rule sample_latent_flow)."""

from replicate.latent import samples_stage
from replicate.runtime import setup_logging

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
setup_logging(snakemake.log[0])
samples_stage(
    snakemake.input.flow,
    snakemake.input.autoencoder,
    snakemake.params.settings,
    int(snakemake.wildcards.seed),
    snakemake.output[0],
)
