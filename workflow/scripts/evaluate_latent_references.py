"""The metrics on real and reconstructed images, as a scale for the generators' numbers (rule
evaluate_latent_references)."""

from replicate.experiments.latent.baseline_stages import reference_stage
from replicate.runtime import run_stage

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
run_stage(
    snakemake,
    reference_stage,
    snakemake.input.autoencoder,
    snakemake.input.latents,
    snakemake.input.classifier,
    snakemake.params.data_dir,
    snakemake.wildcards.dataset,
    snakemake.params.settings,
    snakemake.output[0],
    threads=snakemake.threads,
)
