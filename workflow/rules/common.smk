# Shared by every rule file: configuration validation and the wildcard constraints.
from replicate.config import gpu_jobs, stage_device, validate_config

# Every key's type and range (all violations at once, each naming its key), then the relations
# between keys: a bad setting fails here, on `--dry-run`, before any job.
validate_config(
    config, Path(workflow.basedir, "workflow", "schemas", "config.schema.yaml")
)


SEEDS = config["seeds"]
DATASETS = ["mnist", "fashion_mnist"]

# Among jobs ready to run, Snakemake starts the higher priority first. The longest chains start
# first, so that short jobs fill the cores (or the GPU's share) around them instead of leaving
# one long job running alone at the end: the data before all (every E3 job waits on it; at equal
# priority two 1-thread NPE trainings could take both cores of a laptop for hours first), then
# E3's auto-encoders (1.5 h each on 2 CPU cores; on a GPU the head of the DAG's longest path) and
# sbi's NPE (1.4-3.7 core-hours a seed), then what follows the auto-encoders. Outputs do not
# depend on it.
PRIORITY_DATA = 3
PRIORITY_FIRST = 2
PRIORITY_EARLY = 1


wildcard_constraints:
    seed=r"\d+",
    dataset="|".join(DATASETS),
