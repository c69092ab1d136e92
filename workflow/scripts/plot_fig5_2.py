"""Paper Figure 5.2: INN variants beside ours (rule plot_fig5_2)."""

from replicate.experiments.gmm.stages import plot_fig5_2
from replicate.runtime import run_stage

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
run_stage(
    snakemake,
    plot_fig5_2,
    models=snakemake.params.models,
    samples_csvs=snakemake.input.samples,
    eval_jsons=snakemake.input.eval,
    png_path=snakemake.output.png,
    gmm_config=snakemake.params.gmm_config,
)
