"""Figure 5.4: a fixed z per row, the label varied along it (rule plot_fig5_4)."""

from replicate.experiments.latent.stages import fig5_4_stage
from replicate.runtime import run_stage

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
run_stage(
    snakemake,
    fig5_4_stage,
    snakemake.input.flow,
    snakemake.input.autoencoder,
    snakemake.params.settings,
    snakemake.wildcards.dataset,
    int(snakemake.params.seed),
    snakemake.output[0],
    snakemake.output.images,
)
