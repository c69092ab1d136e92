"""Score one trained Gaussian-mixture run against the exact posterior (rule evaluate_gmm)."""

from replicate.experiments.gmm.stages import evaluate_gmm_run
from replicate.runtime import run_stage

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
run_stage(
    snakemake,
    evaluate_gmm_run,
    model_name=snakemake.wildcards.model,
    checkpoint_path=snakemake.input.model,
    status_path=snakemake.input.status,
    gmm_config=snakemake.params.settings,
    label_map=snakemake.wildcards.labels,
    seed=int(snakemake.wildcards.seed),
    device=snakemake.params.device,
    eval_json=snakemake.output.eval,
    samples_csv=snakemake.output.samples,
    predictions_csv=snakemake.output.predictions,
    network=snakemake.wildcards.network,
)
