"""Train the cINN baseline on one dataset's latents for one seed (rule train_latent_cinn)."""

from replicate.experiments.latent.baseline_stages import cinn_stage
from replicate.runtime import run_stage

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
run_stage(
    snakemake,
    cinn_stage,
    snakemake.input[0],
    snakemake.params.settings,
    int(snakemake.wildcards.seed),
    snakemake.output.model,
    checkpoint_path=snakemake.params.checkpoint,
    device=snakemake.params.device,
    threads=snakemake.threads,
    history_path=snakemake.output.history,
)
