"""Test accuracy of one latent flow through its forward pass (rule evaluate_latent_flow)."""

from replicate.experiments.latent.stages import evaluate_stage
from replicate.runtime import run_stage

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
run_stage(
    snakemake,
    evaluate_stage,
    latents_path=snakemake.input.latents,
    flow_path=snakemake.input.flow,
    latent_config=snakemake.params.settings,
    dataset=snakemake.wildcards.dataset,
    seed=int(snakemake.wildcards.seed),
    json_path=snakemake.output[0],
)
