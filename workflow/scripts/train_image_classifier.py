"""Train the independent CNN classifier on one dataset's real training images (rule
train_latent_classifier)."""

from replicate.experiments.latent.stages import classifier_stage
from replicate.runtime import run_stage

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
run_stage(
    snakemake,
    classifier_stage,
    data_dir=snakemake.params.data_dir,
    dataset=snakemake.wildcards.dataset,
    latent_config=snakemake.params.settings,
    seed=int(snakemake.params.seed),
    model_path=snakemake.output.model,
    eval_path=snakemake.output.metrics,
    device=snakemake.params.device,
)
