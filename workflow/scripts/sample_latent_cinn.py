"""Generate and decode the cINN's evaluation samples, every class alike (rule
sample_latent_cinn)."""

from replicate.latent_eval import cinn_samples_stage
from replicate.runtime import setup_logging

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
setup_logging(snakemake.log[0])
cinn_samples_stage(
    snakemake.input.cinn,
    snakemake.input.autoencoder,
    snakemake.params.settings,
    int(snakemake.wildcards.seed),
    snakemake.output[0],
)
