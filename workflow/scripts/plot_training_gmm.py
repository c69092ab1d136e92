"""Training curves of every GMM model on one network and label map (rule plot_training_gmm)."""

from replicate.gmm_eval import plot_training_curves
from replicate.runtime import setup_logging

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
setup_logging(snakemake.log[0])
plot_training_curves(
    snakemake.input.histories,
    snakemake.input.statuses,
    snakemake.output.png,
    snakemake.wildcards.network,
    snakemake.wildcards.labels,
    snakemake.params.gmm_config,
)
