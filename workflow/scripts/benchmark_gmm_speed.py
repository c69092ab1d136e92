"""Training speed: ours vs the INN variants vs the cINN, one process (rule benchmark_gmm_speed)."""

from replicate.experiments.gmm.stages import benchmark_training_speed
from replicate.runtime import run_stage

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
run_stage(
    snakemake,
    benchmark_training_speed,
    gmm_config=snakemake.params.gmm_config,
    models=snakemake.params.models,
    device=snakemake.params.device,
    csv_path=snakemake.output.csv,
    md_path=snakemake.output.md,
    iterations=snakemake.params.iterations,
)
