"""Train one E4 model on fresh simulator draws (rule train_kinematics)."""

from replicate.experiments.kinematics.stages import train_kinematics_model
from replicate.runtime import run_stage
from replicate.training import TrainingFiles

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
run_stage(
    snakemake,
    train_kinematics_model,
    name=snakemake.wildcards.model,
    settings=snakemake.params.settings,
    seed=int(snakemake.wildcards.seed),
    files=TrainingFiles.of_rule(snakemake),
    device=snakemake.params.device,
)
