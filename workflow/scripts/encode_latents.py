"""Encode the train and test images once (rule encode_latents); the work is in the library."""

from replicate.experiments.latent.stages import encode_stage
from replicate.runtime import run_stage

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
run_stage(
    snakemake,
    encode_stage,
    data_dir=snakemake.params.data_dir,
    dataset=snakemake.wildcards.dataset,
    latent_config=snakemake.params.settings,
    autoencoder_path=snakemake.input.model,
    latents_path=snakemake.output[0],
    device=snakemake.params.device,
)
