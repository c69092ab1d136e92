"""Train one Gaussian-mixture model (rule train_gmm); all the work is in the library."""

from replicate.experiments.gmm.stages import train_gmm_model
from replicate.runtime import run_stage
from replicate.training import TrainingFiles

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
run_stage(
    snakemake,
    train_gmm_model,
    name=snakemake.wildcards.model,
    gmm_config=snakemake.params.settings,
    label_map=snakemake.wildcards.labels,
    seed=int(snakemake.wildcards.seed),
    files=TrainingFiles.of_rule(snakemake),
    device=snakemake.params.device,
)
