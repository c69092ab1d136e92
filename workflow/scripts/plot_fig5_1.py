"""Paper Figure 5.1 for one label map (rule plot_fig5_1)."""

from replicate.gmm_eval import plot_fig5_1
from replicate.runtime import setup_logging

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
setup_logging(snakemake.log[0])
plot_fig5_1(
    snakemake.input.predictions, snakemake.input.samples, snakemake.input.eval, snakemake.output.png
)
