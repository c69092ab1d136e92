"""Pretrain the auto-encoder of one dataset (rule train_autoencoder); the work is in the library."""

from replicate.experiments.latent.stages import autoencoder_stage
from replicate.runtime import run_stage

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
run_stage(
    snakemake,
    autoencoder_stage,
    data_dir=snakemake.params.data_dir,
    dataset=snakemake.wildcards.dataset,
    latent_config=snakemake.params.settings,
    seed=int(snakemake.params.seed),
    model_path=snakemake.output.model,
    metrics_path=snakemake.output.metrics,
    checkpoint_path=snakemake.params.checkpoint,
    device=snakemake.params.device,
)
