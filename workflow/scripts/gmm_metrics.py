"""Mean +- std over seeds of every GMM metric per model x network x label map (rule gmm_metrics)."""

from replicate.gmm_eval import gmm_metrics_table
from replicate.runtime import setup_logging

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
setup_logging(snakemake.log[0])
gmm_metrics_table(
    snakemake.input,
    snakemake.output.csv,
    snakemake.output.md,
    snakemake.params.model_order,
    snakemake.params.network_order,
)
