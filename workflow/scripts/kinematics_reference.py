"""E4 test observations and their rejection-sampling reference (rule kinematics_reference)."""

from replicate.experiments.kinematics.evaluation import make_reference
from replicate.runtime import run_stage

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
run_stage(
    snakemake,
    make_reference,
    snakemake.params.settings,
    snakemake.output.reference,
    snakemake.output.held_out,
    snakemake.output.summary,
)
