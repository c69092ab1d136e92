"""Train the independent CNN classifier on one dataset's real training images (rule
train_latent_classifier)."""

from replicate.experiments.latent.baseline_stages import classifier_stage
from replicate.runtime import run_stage

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
run_stage(
    snakemake,
    classifier_stage,
    snakemake.params.data_dir,
    snakemake.wildcards.dataset,
    snakemake.params.settings,
    int(snakemake.params.seed),
    snakemake.output.model,
    snakemake.output.metrics,
    device=snakemake.params.device,
    threads=snakemake.threads,
)
