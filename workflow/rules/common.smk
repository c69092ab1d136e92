# Shared by every rule file: configuration validation and the wildcard constraints.
from replicate.config import gpu_jobs, stage_device, validate_config

# Every key's type and range (all violations at once, each naming its key), then the relations
# between keys: a bad setting fails here, on `--dry-run`, before any job.
validate_config(
    config, Path(workflow.basedir, "workflow", "schemas", "config.schema.yaml")
)

SEEDS = config["seeds"]
DATASETS = ["mnist", "fashion_mnist"]


wildcard_constraints:
    seed=r"\d+",
    dataset="|".join(DATASETS),
