# Data preparation: the raw MNIST / Fashion-MNIST IDX files, verified against SPEC section 4, in
# torchvision's layout under results/data/{dataset}/. Downstream rules take DATA_TARGETS (the
# verified.json records) as input and read the files with replicate.data.load_split.
from pathlib import Path

from replicate.data import check_prepared

# A prepared file edited or truncated after verification stops every run at start, naming it:
# stat() per file, a re-hash only for files whose size or mtime changed.
for _dataset in DATASETS:
    if Path(f"results/data/{_dataset}/verified.json").is_file():
        check_prepared(f"results/data/{_dataset}", _dataset)


rule prepare_data:
    output:
        "results/data/{dataset}/verified.json",
    log:
        "results/logs/data/prepare_{dataset}.log",
    priority: PRIORITY_DATA
    localrule: True
    conda:
        "../../envs/replicate.yaml"
    threads: 1
    # Downloads: on a cluster, run where the network is (the submitting host).
    resources:
        runtime=30,
        mem_mb=2000,
    # No params: the script reads config["data"] (where to look, timeouts) itself, because the
    # files are byte-identical whichever source supplies them, and a params change would make
    # Snakemake redo this rule and so retrain every model downstream.
    params:
        code=code_of("prepare_data.py"),
    script:
        "../scripts/prepare_data.py"


DATA_TARGETS = expand("results/data/{dataset}/verified.json", dataset=DATASETS)
