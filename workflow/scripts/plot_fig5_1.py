"""Paper Figure 5.1 for one label map (rule plot_fig5_1)."""

from replicate.experiments.gmm.stages import plot_fig5_1
from replicate.runtime import run_stage

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
run_stage(
    snakemake,
    plot_fig5_1,
    predictions_csv=snakemake.input.predictions,
    samples_csv=snakemake.input.samples,
    eval_json=snakemake.input.eval,
    png_path=snakemake.output.png,
)
