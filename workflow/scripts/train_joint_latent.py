"""Train the auto-encoder and the flow together for one variant and seed (rule
train_joint_latent)."""

from replicate.experiments.latent.stages import joint_stage
from replicate.runtime import run_stage

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
run_stage(
    snakemake,
    joint_stage,
    data_dir=snakemake.params.data_dir,
    dataset=snakemake.wildcards.dataset,
    latent_config=snakemake.params.settings,
    variant=snakemake.wildcards.variant,
    seed=int(snakemake.wildcards.seed),
    model_path=snakemake.output.model,
    history_path=snakemake.output.history,
    checkpoint_path=snakemake.params.checkpoint,
    device=snakemake.params.device,
)
