"""Every beyond-the-paper metric of one model (ours or cINN), dataset and seed (rule
evaluate_latent_generator)."""

from replicate.experiments.latent.baseline_stages import evaluate_model_stage
from replicate.runtime import run_stage

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
run_stage(
    snakemake,
    evaluate_model_stage,
    snakemake.wildcards.model,
    snakemake.input.model,
    snakemake.input.samples,
    snakemake.input.latents,
    snakemake.input.classifier,
    snakemake.params.data_dir,
    snakemake.wildcards.dataset,
    snakemake.params.settings,
    int(snakemake.wildcards.seed),
    snakemake.output[0],
    threads=snakemake.threads,
)
