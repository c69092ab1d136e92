"""Mean +- std over seeds of every E4 metric per model (rule kinematics_metrics)."""

from replicate.experiments.kinematics.stages import metrics_table
from replicate.runtime import run_stage

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
run_stage(
    snakemake,
    metrics_table,
    score_paths=list(snakemake.input),
    model_order=snakemake.params.model_order,
    csv_path=snakemake.output.csv,
    md_path=snakemake.output.md,
)
