"""Mean +- std over seeds of every GMM metric per model x network x label map (rule gmm_metrics)."""

from replicate.experiments.gmm.stages import gmm_metrics_table
from replicate.runtime import run_stage

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
run_stage(
    snakemake,
    gmm_metrics_table,
    eval_paths=list(snakemake.input),
    csv_path=snakemake.output.csv,
    md_path=snakemake.output.md,
    model_order=snakemake.params.model_order,
    network_order=snakemake.params.network_order,
)
