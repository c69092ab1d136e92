"""Figure 5.4: a fixed z per row, the label varied along it (rule plot_fig5_4)."""

from replicate.experiments.latent.stages import fig5_4_stage
from replicate.runtime import run_stage

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
run_stage(
    snakemake,
    fig5_4_stage,
    flow_path=snakemake.input.flow,
    autoencoder_path=snakemake.input.autoencoder,
    latent_config=snakemake.params.settings,
    dataset=snakemake.wildcards.dataset,
    seed=int(snakemake.params.seed),
    png_path=snakemake.output[0],
    images_path=snakemake.output.images,
)
