"""Test images above their reconstructions (rule plot_reconstructions)."""

from replicate.experiments.latent.stages import reconstruction_figure_stage
from replicate.runtime import run_stage

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
run_stage(
    snakemake,
    reconstruction_figure_stage,
    data_dir=snakemake.params.data_dir,
    dataset=snakemake.wildcards.dataset,
    latent_config=snakemake.params.settings,
    autoencoder_path=snakemake.input.model,
    png_path=snakemake.output[0],
)
