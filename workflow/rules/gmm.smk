# E1/E2: train every Gaussian-mixture model (ours, the INN variants of Figure 5.2, the cINN) on
# every network of gmm.networks, for every label map and seed. A diverged run still writes its
# outputs, with `diverged: true` in its status JSON, so the evaluation reports it instead of the
# DAG stopping.
from replicate.experiments.gmm.settings import (
    model_names,
    network_names,
    training_settings,
)

GMM_MODELS = model_names(config["gmm"])
GMM_NETWORKS = network_names(config["gmm"])


rule train_gmm:
    output:
        model="results/gmm/models/{model}_{network}_{labels}_seed{seed}.safetensors",
        status="results/gmm/models/{model}_{network}_{labels}_seed{seed}.json",
        history="results/gmm/models/{model}_{network}_{labels}_seed{seed}_history.csv",
    log:
        "results/logs/gmm/train_{model}_{network}_{labels}_seed{seed}.log",
    benchmark:
        "results/benchmarks/gmm/train_{model}_{network}_{labels}_seed{seed}.tsv"
    wildcard_constraints:
        model="|".join(GMM_MODELS),
        network="|".join(GMM_NETWORKS),
        labels="|".join(config["gmm"]["label_maps"]),
    conda:
        "../../envs/replicate.yaml"
    threads: 2
    resources:
        gpu_jobs=gpu_jobs(config, "train_gmm"),
        runtime=120,
        mem_mb=4000,
    params:
        code=code_of("train_gmm.py"),
        # Only the settings this model trains under, so evaluation keys do not retrain it.
        settings=lambda wildcards: training_settings(
            config["gmm"], wildcards.model, wildcards.network
        ),
        device=stage_device(config, "train_gmm"),
        # Saved every few iterations, so a killed job resumes; deleted once the outputs are written.
        resume="results/gmm/checkpoints/{model}_{network}_{labels}_seed{seed}_last.safetensors",
    script:
        "../scripts/train_gmm.py"


GMM_TARGETS = expand(
    "results/gmm/models/{model}_{network}_{labels}_seed{seed}.json",
    model=GMM_MODELS,
    network=GMM_NETWORKS,
    labels=config["gmm"]["label_maps"],
    seed=SEEDS,
)
