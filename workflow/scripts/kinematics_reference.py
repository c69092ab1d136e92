"""E4 test observations and their rejection-sampling reference (rule kinematics_reference)."""

from replicate.experiments.kinematics.stages import make_reference
from replicate.runtime import run_stage

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
run_stage(
    snakemake,
    make_reference,
    config=snakemake.params.settings,
    reference_path=snakemake.output.reference,
    held_out_path=snakemake.output.held_out,
    summary_path=snakemake.output.summary,
)
