"""Table 1: forward-pass test accuracy, mean and std over seeds (rule table1)."""

from replicate.experiments.latent.stages import table1_stage
from replicate.runtime import run_stage

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
run_stage(
    snakemake,
    table1_stage,
    eval_paths=list(snakemake.input),
    csv_path=snakemake.output.csv,
    md_path=snakemake.output.md,
)
