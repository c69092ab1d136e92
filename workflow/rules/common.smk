# Shared by every rule file: configuration validation and the wildcard constraints.
from snakemake.utils import validate

from replicate.config import check_config

validate(config, "../schemas/config.schema.yaml")
check_config(config)

SEEDS = config["seeds"]
DATASETS = ["mnist", "fashion_mnist"]


wildcard_constraints:
    seed=r"\d+",
    dataset="|".join(DATASETS),
