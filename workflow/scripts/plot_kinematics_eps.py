"""E4 figure: ours' posterior and re-simulation errors against eps (rule plot_kinematics_eps)."""

from replicate.experiments.kinematics.stages import plot_eps
from replicate.runtime import run_stage

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
run_stage(
    snakemake,
    plot_eps,
    csv_path=snakemake.input.csv,
    png_path=snakemake.output.png,
)
