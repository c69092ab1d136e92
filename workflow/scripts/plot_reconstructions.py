"""Test images above their reconstructions (rule plot_reconstructions)."""

from replicate.experiments.latent.stages import reconstruction_figure_stage
from replicate.runtime import run_stage

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
run_stage(
    snakemake,
    reconstruction_figure_stage,
    snakemake.params.data_dir,
    snakemake.wildcards.dataset,
    snakemake.params.settings,
    snakemake.input.model,
    snakemake.output[0],
)
