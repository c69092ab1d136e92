"""Sample one trained E4 model for every test observation and score it (rule
evaluate_kinematics)."""

from replicate.experiments.kinematics.stages import evaluate_kinematics_model
from replicate.runtime import run_stage

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
run_stage(
    snakemake,
    evaluate_kinematics_model,
    name=snakemake.wildcards.model,
    settings=snakemake.params.settings,
    seed=int(snakemake.wildcards.seed),
    checkpoint_path=snakemake.input.model,
    status_path=snakemake.input.status,
    reference_path=snakemake.input.reference,
    eval_config=snakemake.params.eval_settings,
    samples_path=snakemake.output.samples,
    scores_path=snakemake.output.scores,
)
