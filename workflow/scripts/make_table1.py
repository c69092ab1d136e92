"""Table 1: forward-pass test accuracy, mean and std over seeds (rule table1)."""

from replicate.latent import table1_stage
from replicate.runtime import setup_logging

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
setup_logging(snakemake.log[0])
table1_stage(list(snakemake.input), snakemake.output.csv, snakemake.output.md)
