"""Encode the train and test images once (rule encode_latents); the work is in the library."""

from replicate.latent import encode_stage
from replicate.runtime import setup_logging

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
setup_logging(snakemake.log[0])
encode_stage(
    snakemake.params.data_dir,
    snakemake.wildcards.dataset,
    snakemake.params.settings,
    snakemake.input.model,
    snakemake.output[0],
    device=snakemake.params.device,
    threads=snakemake.threads,
)
