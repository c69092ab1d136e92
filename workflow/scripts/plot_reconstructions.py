"""Test images above their reconstructions (rule plot_reconstructions)."""

from replicate.latent import reconstruction_figure_stage
from replicate.runtime import setup_logging

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
setup_logging(snakemake.log[0])
reconstruction_figure_stage(
    snakemake.params.data_dir,
    snakemake.wildcards.dataset,
    snakemake.params.settings,
    snakemake.input.model,
    snakemake.output[0],
)
