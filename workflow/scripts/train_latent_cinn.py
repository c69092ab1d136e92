"""Train the cINN baseline on one dataset's latents for one seed (rule train_latent_cinn)."""

from replicate.latent_eval import cinn_stage
from replicate.runtime import setup_logging

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
setup_logging(snakemake.log[0])
cinn_stage(
    snakemake.input[0],
    snakemake.params.settings,
    int(snakemake.wildcards.seed),
    snakemake.output.model,
    device=snakemake.params.device,
    threads=snakemake.threads,
    history_path=snakemake.output.history,
)
