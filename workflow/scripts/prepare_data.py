"""Rule prepare_data: obtain, verify and place one dataset's raw IDX files."""

from pathlib import Path

from replicate.data import prepare_dataset
from replicate.runtime import run_stage

snakemake = globals()["snakemake"]  # injected by Snakemake's `script:` directive
data = snakemake.config["data"]
run_stage(
    snakemake,
    prepare_dataset,
    out_dir=Path(snakemake.output[0]).parent,
    dataset=snakemake.wildcards.dataset,
    search_dirs=data["search_dirs"],
    sources=data["sources"],
    torchvision_timeout_s=data["torchvision_timeout_s"],
    registry_timeout_s=data["registry_timeout_s"],
)
