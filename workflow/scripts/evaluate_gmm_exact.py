"""Score the true posterior like a model: the reference row (rule evaluate_gmm_exact)."""

from replicate.experiments.gmm.evaluation import evaluate_exact
from replicate.runtime import run_stage

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
run_stage(
    snakemake,
    evaluate_exact,
    snakemake.wildcards.labels,
    snakemake.params.settings,
    int(snakemake.wildcards.seed),
    snakemake.output.eval,
    snakemake.output.samples,
    snakemake.output.predictions,
)
