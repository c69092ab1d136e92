"""The linear-Gaussian check against eps / s (rule plot_linear_gaussian_eps)."""

from replicate.experiments.linear_gaussian.stages import plot_linear_gaussian_eps
from replicate.runtime import run_stage

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
run_stage(
    snakemake,
    plot_linear_gaussian_eps,
    csv_path=snakemake.input.csv,
    png_path=snakemake.output.png,
    n_samples=snakemake.params.n_samples,
    data_dim=snakemake.params.data_dim,
)
