"""Score held-out rejection draws as a model's samples: each metric's floor (rule
evaluate_kinematics_floor)."""

from replicate.experiments.kinematics.evaluation import evaluate_reference_floor
from replicate.runtime import run_stage

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
run_stage(
    snakemake,
    evaluate_reference_floor,
    snakemake.input.reference,
    snakemake.input.held_out,
    snakemake.params.eval_settings,
    snakemake.output.scores,
)
