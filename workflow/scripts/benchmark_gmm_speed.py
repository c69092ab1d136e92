"""Training speed: ours vs the INN variants vs the cINN, one process (rule benchmark_gmm_speed)."""

from replicate.benchmark import benchmark_training_speed
from replicate.runtime import setup_logging

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
setup_logging(snakemake.log[0])
benchmark_training_speed(
    snakemake.params.gmm_config,
    snakemake.params.models,
    snakemake.params.device,
    snakemake.output.csv,
    snakemake.output.md,
    iterations=snakemake.params.iterations,
    threads=snakemake.threads,
)
