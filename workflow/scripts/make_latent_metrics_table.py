"""Collect the per-seed latent metrics into results/tables/latent_metrics.csv and .md (rule
latent_metrics)."""

from replicate.experiments.latent.stages import latent_metrics_stage
from replicate.runtime import run_stage

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
run_stage(
    snakemake,
    latent_metrics_stage,
    eval_paths=list(snakemake.input),
    csv_path=snakemake.output.csv,
    md_path=snakemake.output.md,
)
