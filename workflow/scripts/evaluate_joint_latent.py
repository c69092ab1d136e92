"""Every column of the ablation table for one joint model (rule evaluate_joint_latent)."""

from replicate.experiments.latent.stages import evaluate_joint_stage
from replicate.runtime import run_stage

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
run_stage(
    snakemake,
    evaluate_joint_stage,
    data_dir=snakemake.params.data_dir,
    dataset=snakemake.wildcards.dataset,
    latent_config=snakemake.params.settings,
    variant=snakemake.wildcards.variant,
    seed=int(snakemake.wildcards.seed),
    model_path=snakemake.input.model,
    classifier_path=snakemake.input.classifier,
    json_path=snakemake.output[0],
)
