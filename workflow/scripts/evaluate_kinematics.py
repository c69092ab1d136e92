"""Sample one trained E4 model for every test observation and score it (rule
evaluate_kinematics)."""

from replicate.experiments.kinematics.evaluation import evaluate_kinematics_model
from replicate.runtime import run_stage

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
run_stage(
    snakemake,
    evaluate_kinematics_model,
    snakemake.wildcards.model,
    snakemake.params.settings,
    int(snakemake.wildcards.seed),
    snakemake.input.model,
    snakemake.input.status,
    snakemake.input.reference,
    snakemake.params.eval_settings,
    snakemake.output.samples,
    snakemake.output.scores,
)
