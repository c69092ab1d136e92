"""Pretrain the auto-encoder of one dataset (rule train_autoencoder); the work is in the library."""

from replicate.experiments.latent.stages import autoencoder_stage
from replicate.runtime import run_stage

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
run_stage(
    snakemake,
    autoencoder_stage,
    snakemake.params.data_dir,
    snakemake.wildcards.dataset,
    snakemake.params.settings,
    int(snakemake.params.seed),
    snakemake.output.model,
    snakemake.output.metrics,
    snakemake.params.checkpoint,
    device=snakemake.params.device,
    threads=snakemake.threads,
)
