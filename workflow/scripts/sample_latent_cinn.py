"""Generate and decode the cINN's evaluation samples, every class alike (rule
sample_latent_cinn)."""

from replicate.experiments.latent.stages import samples_stage
from replicate.runtime import run_stage

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
run_stage(
    snakemake,
    samples_stage,
    model="cinn",
    model_path=snakemake.input.cinn,
    autoencoder_path=snakemake.input.autoencoder,
    latent_config=snakemake.params.settings,
    seed=int(snakemake.wildcards.seed),
    samples_path=snakemake.output[0],
)
