"""sbi's NPE on sbibm's gaussian_linear task against sbibm's published C2ST (rule
npe_sbibm_check)."""

from replicate.experiments.linear_gaussian.stages import npe_sbibm_check
from replicate.runtime import run_stage

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
run_stage(
    snakemake,
    npe_sbibm_check,
    settings=snakemake.params.settings,
    csv_path=snakemake.output.csv,
    md_path=snakemake.output.md,
)
