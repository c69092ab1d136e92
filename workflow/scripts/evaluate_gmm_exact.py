"""Score the true posterior like a model: the reference row (rule evaluate_gmm_exact)."""

from replicate.gmm_eval import evaluate_exact
from replicate.runtime import setup_logging

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
setup_logging(snakemake.log[0])
evaluate_exact(
    snakemake.wildcards.labels,
    snakemake.params.settings,
    int(snakemake.wildcards.seed),
    snakemake.output.eval,
    snakemake.output.samples,
    snakemake.output.predictions,
)
