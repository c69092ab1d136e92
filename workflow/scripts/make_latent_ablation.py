"""The pretrained pipeline and the joint variants side by side (rule latent_ablation)."""

from replicate.experiments.latent.stages import ablation_table_stage
from replicate.runtime import run_stage

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
pretrained = list(snakemake.input.pretrained)
run_stage(
    snakemake,
    ablation_table_stage,
    # Four files per dataset and seed, in the order pretrained_ablation_inputs lists them.
    pretrained=[tuple(pretrained[i : i + 4]) for i in range(0, len(pretrained), 4)],
    joint_eval_paths=list(snakemake.input.joint),
    csv_path=snakemake.output.csv,
    md_path=snakemake.output.md,
)
