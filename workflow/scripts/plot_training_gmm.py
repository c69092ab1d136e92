"""Training curves of every GMM model on one network and label map (rule plot_training_gmm)."""

from replicate.experiments.gmm.stages import plot_training_curves
from replicate.runtime import run_stage

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
run_stage(
    snakemake,
    plot_training_curves,
    history_csvs=snakemake.input.histories,
    status_jsons=snakemake.input.statuses,
    png_path=snakemake.output.png,
    network=snakemake.wildcards.network,
    label_map=snakemake.wildcards.labels,
    gmm_config=snakemake.params.gmm_config,
)
