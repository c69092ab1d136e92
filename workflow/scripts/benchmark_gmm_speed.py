"""Training speed: ours vs the INN variants vs the cINN, one process (rule benchmark_gmm_speed)."""

from replicate.experiments.gmm.benchmark import benchmark_training_speed
from replicate.runtime import run_stage

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
run_stage(
    snakemake,
    benchmark_training_speed,
    snakemake.params.gmm_config,
    snakemake.params.models,
    snakemake.params.device,
    snakemake.output.csv,
    snakemake.output.md,
    iterations=snakemake.params.iterations,
    threads=snakemake.threads,
)
