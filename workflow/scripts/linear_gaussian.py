"""Mean +- std over seeds of the linear-Gaussian runs (rule linear_gaussian)."""

from replicate.experiments.linear_gaussian.stages import linear_gaussian_table
from replicate.runtime import run_stage

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
run_stage(
    snakemake,
    linear_gaussian_table,
    run_paths=list(snakemake.input),
    model_order=snakemake.params.model_order,
    csv_path=snakemake.output.csv,
    md_path=snakemake.output.md,
)
