"""Score held-out rejection draws as a model's samples: each metric's floor (rule
evaluate_kinematics_floor)."""

from replicate.experiments.kinematics.stages import evaluate_reference_floor
from replicate.runtime import run_stage

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
run_stage(
    snakemake,
    evaluate_reference_floor,
    reference_path=snakemake.input.reference,
    held_out_path=snakemake.input.held_out,
    eval_config=snakemake.params.eval_settings,
    scores_path=snakemake.output.scores,
)
