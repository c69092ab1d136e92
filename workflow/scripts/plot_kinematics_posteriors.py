"""E4 figure: arms and end points from every model's posterior beside the reference (rule
plot_kinematics_posteriors)."""

from replicate.experiments.kinematics.stages import plot_posteriors
from replicate.runtime import run_stage

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
run_stage(
    snakemake,
    plot_posteriors,
    models=snakemake.params.models,
    sample_paths=snakemake.input.samples,
    reference_path=snakemake.input.reference,
    observation_indices=snakemake.params.observations,
    png_path=snakemake.output.png,
)
