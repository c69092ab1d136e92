"""Score one trained Gaussian-mixture run against the exact posterior (rule evaluate_gmm)."""

from replicate.experiments.gmm.evaluation import evaluate_gmm_run
from replicate.runtime import run_stage

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
run_stage(
    snakemake,
    evaluate_gmm_run,
    snakemake.wildcards.model,
    snakemake.input.model,
    snakemake.input.status,
    snakemake.params.settings,
    snakemake.wildcards.labels,
    int(snakemake.wildcards.seed),
    snakemake.params.device,
    snakemake.output.eval,
    snakemake.output.samples,
    snakemake.output.predictions,
    threads=snakemake.threads,
    network=snakemake.wildcards.network,
)
