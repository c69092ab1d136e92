"""Training curves of the latent experiment for one dataset (rule plot_training_latent)."""

from replicate.experiments.latent.stages import training_curves_stage
from replicate.runtime import run_stage

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
run_stage(
    snakemake,
    training_curves_stage,
    autoencoder_metrics_path=snakemake.input.autoencoder,
    history_paths=list(snakemake.input.histories),
    dataset=snakemake.wildcards.dataset,
    png_path=snakemake.output.png,
)
