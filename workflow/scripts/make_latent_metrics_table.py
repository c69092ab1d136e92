"""Collect the per-seed latent metrics into results/tables/latent_metrics.csv and .md (rule
latent_metrics)."""

from replicate.latent_eval import latent_metrics_stage
from replicate.runtime import setup_logging

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
setup_logging(snakemake.log[0])
latent_metrics_stage(snakemake.input, snakemake.output.csv, snakemake.output.md)
