"""Paper Figure 5.2: INN variants beside ours (rule plot_fig5_2)."""

from replicate.gmm_eval import plot_fig5_2
from replicate.runtime import setup_logging

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
setup_logging(snakemake.log[0])
plot_fig5_2(
    snakemake.params.models,
    snakemake.input.samples,
    snakemake.input.eval,
    snakemake.output.png,
    snakemake.params.gmm_config,
)
