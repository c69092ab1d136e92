"""Train the conditional flow on one dataset's latents for one seed (rule train_latent_flow)."""

from replicate.experiments.latent.stages import flow_stage
from replicate.runtime import run_stage

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
run_stage(
    snakemake,
    flow_stage,
    snakemake.input[0],
    snakemake.params.settings,
    int(snakemake.wildcards.seed),
    snakemake.output.model,
    snakemake.params.checkpoint,
    device=snakemake.params.device,
    threads=snakemake.threads,
    history_path=snakemake.output.history,
)
