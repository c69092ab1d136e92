"""The metrics on real and reconstructed images, as a scale for the generators' numbers (rule
evaluate_latent_references)."""

from replicate.latent_eval import reference_stage
from replicate.runtime import setup_logging

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
setup_logging(snakemake.log[0])
reference_stage(
    snakemake.input.autoencoder,
    snakemake.input.latents,
    snakemake.input.classifier,
    snakemake.params.data_dir,
    snakemake.wildcards.dataset,
    snakemake.params.settings,
    snakemake.output[0],
    threads=snakemake.threads,
)
