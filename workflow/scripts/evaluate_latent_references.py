"""The metrics on real and reconstructed images, as a scale for the generators' numbers (rule
evaluate_latent_references)."""

from replicate.experiments.latent.stages import reference_stage
from replicate.runtime import run_stage

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
run_stage(
    snakemake,
    reference_stage,
    autoencoder_path=snakemake.input.autoencoder,
    latents_path=snakemake.input.latents,
    classifier_path=snakemake.input.classifier,
    data_dir=snakemake.params.data_dir,
    dataset=snakemake.wildcards.dataset,
    latent_config=snakemake.params.settings,
    json_path=snakemake.output[0],
)
