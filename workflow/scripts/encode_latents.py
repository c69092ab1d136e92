"""Encode the train and test images once (rule encode_latents); the work is in the library."""

from replicate.experiments.latent.stages import encode_stage
from replicate.runtime import run_stage

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
run_stage(
    snakemake,
    encode_stage,
    snakemake.params.data_dir,
    snakemake.wildcards.dataset,
    snakemake.params.settings,
    snakemake.input.model,
    snakemake.output[0],
    device=snakemake.params.device,
    threads=snakemake.threads,
)
