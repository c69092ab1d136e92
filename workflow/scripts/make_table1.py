"""Table 1: forward-pass test accuracy, mean and std over seeds (rule table1)."""

from replicate.experiments.latent.stages import table1_stage
from replicate.runtime import run_stage

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
run_stage(snakemake, table1_stage, list(snakemake.input), snakemake.output.csv, snakemake.output.md)
