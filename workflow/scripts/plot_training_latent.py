"""Training curves of the latent experiment for one dataset (rule plot_training_latent)."""

from replicate.latent import training_curves_stage
from replicate.runtime import setup_logging

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
setup_logging(snakemake.log[0])
training_curves_stage(
    snakemake.input.autoencoder,
    snakemake.input.histories,
    snakemake.wildcards.dataset,
    snakemake.output.png,
)
