"""Training curves of every GMM model on one network and label map (rule plot_training_gmm)."""

from replicate.experiments.gmm.figures import plot_training_curves
from replicate.runtime import run_stage

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
run_stage(
    snakemake,
    plot_training_curves,
    snakemake.input.histories,
    snakemake.input.statuses,
    snakemake.output.png,
    snakemake.wildcards.network,
    snakemake.wildcards.labels,
    snakemake.params.gmm_config,
)
