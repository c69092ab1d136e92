"""Train one Gaussian-mixture model (rule train_gmm); all the work is in the library."""

from replicate.experiments.gmm.training import train_gmm_model
from replicate.runtime import run_stage

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
run_stage(
    snakemake,
    train_gmm_model,
    snakemake.wildcards.model,
    snakemake.params.settings,
    snakemake.wildcards.labels,
    int(snakemake.wildcards.seed),
    snakemake.params.device,
    snakemake.output.model,
    snakemake.output.status,
    history_path=snakemake.output.history,
    resume_path=snakemake.params.resume,
    threads=snakemake.threads,
)
