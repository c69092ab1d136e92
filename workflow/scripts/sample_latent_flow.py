"""Generate images of every class from one latent flow (rule sample_latent_flow)."""

from replicate.experiments.latent.stages import samples_stage
from replicate.runtime import run_stage

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
run_stage(
    snakemake,
    samples_stage,
    model="ours",
    model_path=snakemake.input.flow,
    autoencoder_path=snakemake.input.autoencoder,
    latent_config=snakemake.params.settings,
    seed=int(snakemake.wildcards.seed),
    samples_path=snakemake.output[0],
)
