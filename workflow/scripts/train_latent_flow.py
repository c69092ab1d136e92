"""Train the conditional flow on one dataset's latents for one seed (rule train_latent_flow)."""

from replicate.experiments.latent.stages import latent_model_stage
from replicate.runtime import run_stage

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
run_stage(
    snakemake,
    latent_model_stage,
    model="ours",
    latents_path=snakemake.input[0],
    latent_config=snakemake.params.settings,
    seed=int(snakemake.wildcards.seed),
    model_path=snakemake.output.model,
    checkpoint_path=snakemake.params.checkpoint,
    history_path=snakemake.output.history,
    device=snakemake.params.device,
)
