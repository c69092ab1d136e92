"""Mean +- std over seeds of every E4 metric per model (rule kinematics_metrics)."""

from replicate.experiments.kinematics.evaluation import metrics_table
from replicate.runtime import run_stage

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
run_stage(
    snakemake,
    metrics_table,
    snakemake.input,
    snakemake.params.model_order,
    snakemake.output.csv,
    snakemake.output.md,
)
