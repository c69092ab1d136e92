"""Score the true posterior like a model: the reference row (rule evaluate_gmm_exact)."""

from replicate.experiments.gmm.stages import evaluate_exact
from replicate.runtime import run_stage

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
run_stage(
    snakemake,
    evaluate_exact,
    label_map=snakemake.wildcards.labels,
    gmm_config=snakemake.params.settings,
    seed=int(snakemake.wildcards.seed),
    eval_json=snakemake.output.eval,
    samples_csv=snakemake.output.samples,
    predictions_csv=snakemake.output.predictions,
)
