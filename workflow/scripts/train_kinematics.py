"""Train one E4 model on fresh simulator draws (rule train_kinematics)."""

from replicate.experiments.kinematics.training import train_kinematics_model
from replicate.runtime import run_stage

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
run_stage(
    snakemake,
    train_kinematics_model,
    snakemake.wildcards.model,
    snakemake.params.settings,
    int(snakemake.wildcards.seed),
    snakemake.params.device,
    snakemake.output.model,
    snakemake.output.status,
    history_path=snakemake.output.history,
    resume_path=snakemake.params.resume,
)
