"""Figure 5.3: one row of generated samples per class (rule plot_fig5_3)."""

from replicate.experiments.latent.stages import fig5_3_stage
from replicate.runtime import run_stage

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
run_stage(
    snakemake,
    fig5_3_stage,
    samples_path=snakemake.input[0],
    dataset=snakemake.wildcards.dataset,
    n_per_class=int(snakemake.params.n_per_class),
    png_path=snakemake.output[0],
)
