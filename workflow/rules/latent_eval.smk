# E3, beyond the paper: an independent CNN classifier trained on real images judges generated
# samples of ours and of the cINN baseline (same latents, same flow size); a linear probe measures
# the label information left in z. One table: results/tables/latent_metrics.csv.
LATENT_EVAL_MODELS = ["ours", "cinn"]
# The classifier is trained once per dataset, seeded by the first of `seeds` (as the auto-encoder).
CLASSIFIER_SEED = SEEDS[0]
# Only the keys each rule depends on, so editing another key does not retrain the model.
CLASSIFIER_SETTINGS = {k: LATENT[k] for k in ("n_train", "n_test", "classifier")}
CINN_SETTINGS = {"flow": LATENT["flow"], "cinn": LATENT["cinn"]}

LATENT_EVAL_SETTINGS = {
    k: LATENT[k]
    for k in ("n_train", "n_test", "flow", "autoencoder", "n_eval_samples_per_class")
}
# Each model's checkpoint and generated samples (ours come from workflow/rules/latent.smk).
GENERATOR_FILES = {
    "ours": (
        rules.train_latent_flow.output.model,
        rules.sample_latent_flow.output[0],
    ),
    "cinn": (
        "results/latent/{dataset}/cinn_seed{seed}.safetensors",
        "results/latent/{dataset}/cinn_samples_seed{seed}.npz",
    ),
}


# Tables and figures take seconds: on a cluster they run on the submit host instead of queueing
# as jobs of their own.
localrules:
    latent_metrics,
    plot_training_latent,


rule train_latent_classifier:
    input:
        rules.prepare_data.output[0],
    output:
        model="results/latent/{dataset}/classifier.safetensors",
        metrics="results/latent/{dataset}/classifier_eval.json",
    log:
        "results/logs/latent_eval/train_classifier_{dataset}.log",
    benchmark:
        "results/benchmarks/latent_eval/train_classifier_{dataset}.tsv"
    conda:
        "../../envs/replicate.yaml"
    threads: 2
    resources:
        gpu_jobs=gpu_jobs(config, "train_latent_classifier"),
        runtime=2 * 60,
        mem_mb=4000,
    params:
        code=code_of("train_image_classifier.py"),
        data_dir=lambda wildcards, input: str(Path(input[0]).parent),
        settings=CLASSIFIER_SETTINGS,
        seed=CLASSIFIER_SEED,
        device=stage_device(config, "train_latent_classifier"),
    script:
        "../scripts/train_image_classifier.py"


rule train_latent_cinn:
    input:
        rules.encode_latents.output[0],
    output:
        model="results/latent/{dataset}/cinn_seed{seed}.safetensors",
        history="results/latent/{dataset}/cinn_seed{seed}_history.json",
    log:
        "results/logs/latent_eval/train_cinn_{dataset}_seed{seed}.log",
    benchmark:
        "results/benchmarks/latent_eval/train_cinn_{dataset}_seed{seed}.tsv"
    priority: PRIORITY_EARLY
    conda:
        "../../envs/replicate.yaml"
    threads: 1
    resources:
        gpu_jobs=gpu_jobs(config, "train_latent_cinn"),
        runtime=6 * 60,
        mem_mb=4000,
    params:
        code=code_of("train_latent_cinn.py"),
        settings=CINN_SETTINGS,
        checkpoint="results/latent/{dataset}/checkpoints/cinn_seed{seed}_last.safetensors",
        device=stage_device(config, "train_latent_cinn"),
    script:
        "../scripts/train_latent_cinn.py"


rule sample_latent_cinn:
    input:
        cinn=rules.train_latent_cinn.output.model,
        autoencoder=rules.train_autoencoder.output.model,
    output:
        "results/latent/{dataset}/cinn_samples_seed{seed}.npz",
    log:
        "results/logs/latent_eval/sample_cinn_{dataset}_seed{seed}.log",
    conda:
        "../../envs/replicate.yaml"
    threads: 1
    resources:
        gpu_jobs=gpu_jobs(config, "sample_latent_cinn"),
        runtime=30,
        mem_mb=4000,
    params:
        code=code_of("sample_latent_cinn.py"),
        settings=LATENT_EVAL_SETTINGS,
    script:
        "../scripts/sample_latent_cinn.py"


rule evaluate_latent_generator:
    input:
        model=lambda wc: GENERATOR_FILES[wc.model][0].format(
            dataset=wc.dataset, seed=wc.seed
        ),
        samples=lambda wc: GENERATOR_FILES[wc.model][1].format(
            dataset=wc.dataset, seed=wc.seed
        ),
        latents=rules.encode_latents.output[0],
        classifier=rules.train_latent_classifier.output.model,
        verified=rules.prepare_data.output[0],
    output:
        "results/latent/{dataset}/metrics_{model}_seed{seed}.json",
    log:
        "results/logs/latent_eval/evaluate_{model}_{dataset}_seed{seed}.log",
    wildcard_constraints:
        model="|".join(LATENT_EVAL_MODELS),
    conda:
        "../../envs/replicate.yaml"
    threads: 1
    resources:
        runtime=60,
        mem_mb=8000,
    params:
        code=code_of("evaluate_latent_generator.py"),
        data_dir=lambda wildcards, input: str(Path(input.verified).parent),
        settings=LATENT_EVAL_SETTINGS,
    script:
        "../scripts/evaluate_latent_generator.py"


rule evaluate_latent_references:
    input:
        autoencoder=rules.train_autoencoder.output.model,
        latents=rules.encode_latents.output[0],
        classifier=rules.train_latent_classifier.output.model,
        verified=rules.prepare_data.output[0],
    output:
        "results/latent/{dataset}/metrics_references.json",
    log:
        "results/logs/latent_eval/evaluate_references_{dataset}.log",
    conda:
        "../../envs/replicate.yaml"
    threads: 1
    resources:
        runtime=60,
        mem_mb=8000,
    params:
        code=code_of("evaluate_latent_references.py"),
        data_dir=lambda wildcards, input: str(Path(input.verified).parent),
        settings=LATENT_EVAL_SETTINGS,
    script:
        "../scripts/evaluate_latent_references.py"


rule latent_metrics:
    input:
        expand(
            rules.evaluate_latent_generator.output[0],
            dataset=LATENT_DATASETS,
            model=LATENT_EVAL_MODELS,
            seed=SEEDS,
        ),
        expand(
            rules.evaluate_latent_references.output[0],
            dataset=LATENT_DATASETS,
        ),
    output:
        csv=report(
            "results/tables/latent_metrics.csv",
            caption="../report/latent_metrics.rst",
            category="Latent flow (E3)",
        ),
        md="results/tables/latent_metrics.md",
    log:
        "results/logs/latent_eval/latent_metrics.log",
    conda:
        "../../envs/replicate.yaml"
    threads: 1
    resources:
        runtime=10,
        mem_mb=2000,
    params:
        code=code_of("make_latent_metrics_table.py"),
    script:
        "../scripts/make_latent_metrics_table.py"


rule plot_training_latent:
    input:
        autoencoder=rules.train_autoencoder.output.metrics,
        histories=lambda w: expand(
            [
                rules.train_latent_flow.output.history,
                rules.train_latent_cinn.output.history,
            ],
            dataset=w.dataset,
            seed=SEEDS,
        ),
    output:
        png=report(
            "results/figures/training_latent_{dataset}.png",
            caption="../report/training_latent.rst",
            category="Latent flow (E3)",
        ),
        pdf="results/figures/training_latent_{dataset}.pdf",
    log:
        "results/logs/latent_eval/plot_training_latent_{dataset}.log",
    conda:
        "../../envs/replicate.yaml"
    threads: 1
    resources:
        runtime=10,
        mem_mb=2000,
    params:
        code=code_of("plot_training_latent.py"),
    script:
        "../scripts/plot_training_latent.py"


LATENT_EVAL_TARGETS = [
    *expand("results/figures/training_latent_{dataset}.png", dataset=LATENT_DATASETS),
    "results/tables/latent_metrics.csv",
    *expand("results/latent/{dataset}/classifier_eval.json", dataset=LATENT_DATASETS),
]
