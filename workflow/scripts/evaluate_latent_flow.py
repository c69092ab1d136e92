"""Test accuracy of one latent flow through its forward pass (rule evaluate_latent_flow)."""

from replicate.latent import evaluate_stage
from replicate.runtime import setup_logging

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
setup_logging(snakemake.log[0])
evaluate_stage(
    snakemake.input.latents,
    snakemake.input.flow,
    snakemake.params.settings,
    snakemake.wildcards.dataset,
    int(snakemake.wildcards.seed),
    snakemake.output[0],
)
