"""Every beyond-the-paper metric of one model (ours or cINN), dataset and seed (rule
evaluate_latent_generator)."""

from replicate.latent_eval import evaluate_model_stage
from replicate.runtime import setup_logging

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
setup_logging(snakemake.log[0])
evaluate_model_stage(
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
