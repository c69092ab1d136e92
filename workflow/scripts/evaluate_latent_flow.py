"""Test accuracy of one latent flow through its forward pass (rule evaluate_latent_flow)."""

from replicate.experiments.latent.stages import evaluate_stage
from replicate.runtime import run_stage

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
run_stage(
    snakemake,
    evaluate_stage,
    snakemake.input.latents,
    snakemake.input.flow,
    snakemake.params.settings,
    snakemake.wildcards.dataset,
    int(snakemake.wildcards.seed),
    snakemake.output[0],
)
