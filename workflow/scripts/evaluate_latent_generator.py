"""Every beyond-the-paper metric of one model (ours or cINN), dataset and seed (rule
evaluate_latent_generator)."""

from replicate.experiments.latent.stages import evaluate_model_stage
from replicate.runtime import run_stage

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
run_stage(
    snakemake,
    evaluate_model_stage,
    model=snakemake.wildcards.model,
    model_path=snakemake.input.model,
    samples_path=snakemake.input.samples,
    latents_path=snakemake.input.latents,
    classifier_path=snakemake.input.classifier,
    data_dir=snakemake.params.data_dir,
    dataset=snakemake.wildcards.dataset,
    latent_config=snakemake.params.settings,
    seed=int(snakemake.wildcards.seed),
    json_path=snakemake.output[0],
)
