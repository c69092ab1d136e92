# E1/E2 evaluation: every trained Gaussian-mixture model scored against the exact posterior
# (accuracy vs Bayes, samples in the requested mode, W2 to exact samples, held-out NLL), the true
# posterior scored the same way as the reference row "exact", Figures 5.1 and 5.2, the metric table
# and the training-speed benchmark. Uses GMM_MODELS and GMM_NETWORKS from gmm.smk.
from replicate.experiments.gmm.settings import training_settings

GMM_LABEL_MAPS = config["gmm"]["label_maps"]
GMM_EVAL_KEYS = {k: config["gmm"][k] for k in ("n_test", "n_posterior_samples")}
# Figure 5.1 file stem per label map: fig5_1_gmm.png for "all", fig5_1_gmm_<map>.png otherwise.
FIG5_1_STEMS = {m: "gmm" if m == "all" else f"gmm_{m}" for m in GMM_LABEL_MAPS}
FIG5_1_LABELS = {stem: m for m, stem in FIG5_1_STEMS.items()}
# Figure 5.2: the INN variants in configured order, then ours and the exact posterior.
FIG5_2_MODELS = [m for m in GMM_MODELS if m.startswith("inn_")] + ["ours"]
FIG_SEED = SEEDS[0]
FIG_NETWORK = config["gmm"]["figure_network"]


# Tables and figures take seconds: on a cluster they run on the submit host instead of queueing
# as jobs of their own.
localrules:
    gmm_metrics,
    plot_fig5_1,
    plot_fig5_2,
    plot_training_gmm,


# One evaluation's outputs, formatted with model, network, labels and seed; the exact posterior's
# (no network) with labels and seed.
GMM_EVAL_JSON = "results/gmm/eval/{model}_{network}_{labels}_seed{seed}.json"
GMM_SAMPLES_CSV = "results/gmm/samples/{model}_{network}_{labels}_seed{seed}.csv"
GMM_PREDICTIONS_CSV = (
    "results/gmm/predictions/{model}_{network}_{labels}_seed{seed}.csv"
)
EXACT_EVAL_JSON = "results/gmm/eval/exact_{labels}_seed{seed}.json"
EXACT_SAMPLES_CSV = "results/gmm/samples/exact_{labels}_seed{seed}.csv"


rule evaluate_gmm:
    input:
        model=rules.train_gmm.output.model,
        status=rules.train_gmm.output.status,
    output:
        eval=GMM_EVAL_JSON,
        samples=GMM_SAMPLES_CSV,
        predictions=GMM_PREDICTIONS_CSV,
    log:
        "results/logs/gmm/evaluate_{model}_{network}_{labels}_seed{seed}.log",
    wildcard_constraints:
        model="|".join(GMM_MODELS),
        network="|".join(GMM_NETWORKS),
        labels="|".join(GMM_LABEL_MAPS),
    conda:
        "../../envs/replicate.yaml"
    threads: 1
    resources:
        gpu_jobs=gpu_jobs(config, "evaluate_gmm"),
        runtime=30,
        mem_mb=4000,
    params:
        code=code_of("evaluate_gmm.py"),
        # The model's training settings (to load its checkpoint) plus the evaluation sizes.
        settings=lambda wildcards: training_settings(
            config["gmm"], wildcards.model, wildcards.network
        )
        | GMM_EVAL_KEYS,
        device=stage_device(config, "evaluate_gmm"),
    script:
        "../scripts/evaluate_gmm.py"


rule evaluate_gmm_exact:
    output:
        eval=EXACT_EVAL_JSON,
        samples=EXACT_SAMPLES_CSV,
        predictions="results/gmm/predictions/exact_{labels}_seed{seed}.csv",
    log:
        "results/logs/gmm/evaluate_exact_{labels}_seed{seed}.log",
    wildcard_constraints:
        labels="|".join(GMM_LABEL_MAPS),
    conda:
        "../../envs/replicate.yaml"
    threads: 1
    resources:
        runtime=30,
        mem_mb=4000,
    params:
        code=code_of("evaluate_gmm_exact.py"),
        settings=GMM_EVAL_KEYS,
    script:
        "../scripts/evaluate_gmm_exact.py"


rule gmm_metrics:
    input:
        expand(EXACT_EVAL_JSON, labels=GMM_LABEL_MAPS, seed=SEEDS),
        expand(
            GMM_EVAL_JSON,
            model=GMM_MODELS,
            network=GMM_NETWORKS,
            labels=GMM_LABEL_MAPS,
            seed=SEEDS,
        ),
    output:
        csv=report(
            "results/tables/gmm_metrics.csv",
            caption="../report/gmm_metrics.rst",
            category="E1/E2 Gaussian mixture",
        ),
        md="results/tables/gmm_metrics.md",
    log:
        "results/logs/gmm/gmm_metrics.log",
    conda:
        "../../envs/replicate.yaml"
    threads: 1
    resources:
        runtime=10,
        mem_mb=2000,
    params:
        code=code_of("gmm_metrics.py"),
        model_order=["exact", *GMM_MODELS],
        network_order=GMM_NETWORKS,
    script:
        "../scripts/gmm_metrics.py"


rule plot_fig5_1:
    input:
        predictions=lambda w: GMM_PREDICTIONS_CSV.format(
            model="ours",
            network=FIG_NETWORK,
            labels=FIG5_1_LABELS[w.stem],
            seed=FIG_SEED,
        ),
        samples=lambda w: GMM_SAMPLES_CSV.format(
            model="ours",
            network=FIG_NETWORK,
            labels=FIG5_1_LABELS[w.stem],
            seed=FIG_SEED,
        ),
        eval=lambda w: GMM_EVAL_JSON.format(
            model="ours",
            network=FIG_NETWORK,
            labels=FIG5_1_LABELS[w.stem],
            seed=FIG_SEED,
        ),
    output:
        png=report(
            "results/figures/fig5_1_{stem}.png",
            caption="../report/fig5_1_gmm.rst",
            category="E1/E2 Gaussian mixture",
        ),
        pdf="results/figures/fig5_1_{stem}.pdf",
    log:
        "results/logs/gmm/plot_fig5_1_{stem}.log",
    wildcard_constraints:
        stem="|".join(FIG5_1_LABELS),
    conda:
        "../../envs/replicate.yaml"
    threads: 1
    resources:
        runtime=10,
        mem_mb=2000,
    params:
        code=code_of("plot_fig5_1.py"),
    script:
        "../scripts/plot_fig5_1.py"


rule plot_fig5_2:
    input:
        samples=[
            *expand(
                GMM_SAMPLES_CSV,
                model=FIG5_2_MODELS,
                network=FIG_NETWORK,
                labels="all",
                seed=FIG_SEED,
            ),
            EXACT_SAMPLES_CSV.format(labels="all", seed=FIG_SEED),
        ],
        eval=[
            *expand(
                GMM_EVAL_JSON,
                model=FIG5_2_MODELS,
                network=FIG_NETWORK,
                labels="all",
                seed=FIG_SEED,
            ),
            EXACT_EVAL_JSON.format(labels="all", seed=FIG_SEED),
        ],
    output:
        png=report(
            "results/figures/fig5_2_inn_variants.png",
            caption="../report/fig5_2_inn_variants.rst",
            category="E1/E2 Gaussian mixture",
        ),
        pdf="results/figures/fig5_2_inn_variants.pdf",
    log:
        "results/logs/gmm/plot_fig5_2.log",
    conda:
        "../../envs/replicate.yaml"
    threads: 1
    resources:
        runtime=10,
        mem_mb=2000,
    params:
        code=code_of("plot_fig5_2.py"),
        models=[*FIG5_2_MODELS, "exact"],
        gmm_config={"inn": config["gmm"]["inn"]},
    script:
        "../scripts/plot_fig5_2.py"


rule plot_training_gmm:
    input:
        histories=lambda w: expand(
            rules.train_gmm.output.history,
            model=GMM_MODELS,
            network=w.network,
            labels=w.labels,
            seed=SEEDS,
        ),
        statuses=lambda w: expand(
            rules.train_gmm.output.status,
            model=GMM_MODELS,
            network=w.network,
            labels=w.labels,
            seed=SEEDS,
        ),
    output:
        png=report(
            "results/figures/training_gmm_{network}_{labels}.png",
            caption="../report/training_gmm.rst",
            category="E1/E2 Gaussian mixture",
        ),
        pdf="results/figures/training_gmm_{network}_{labels}.pdf",
    log:
        "results/logs/gmm/plot_training_gmm_{network}_{labels}.log",
    wildcard_constraints:
        network="|".join(GMM_NETWORKS),
        labels="|".join(GMM_LABEL_MAPS),
    conda:
        "../../envs/replicate.yaml"
    threads: 1
    resources:
        runtime=10,
        mem_mb=2000,
    params:
        code=code_of("plot_training_gmm.py"),
        gmm_config={"inn": config["gmm"]["inn"]},
    script:
        "../scripts/plot_training_gmm.py"


rule benchmark_gmm_speed:
    output:
        csv=report(
            "results/tables/training_speed.csv",
            caption="../report/training_speed.rst",
            category="E1/E2 Gaussian mixture",
        ),
        md="results/tables/training_speed.md",
    log:
        "results/logs/gmm/benchmark_gmm_speed.log",
    benchmark:
        "results/benchmarks/gmm/benchmark_gmm_speed.tsv"
    conda:
        "../../envs/replicate.yaml"
    # All cores: the timings should not compete with other rules (see the caption). Read when the
    # job is planned, so commands that plan none (`snakemake --unlock`) need no --cores.
    threads: lambda wildcards: workflow.cores
    resources:
        gpu_jobs=gpu_jobs(config, "benchmark_gmm_speed"),
        runtime=60,
        mem_mb=8000,
    params:
        code=code_of("benchmark_gmm_speed.py"),
        # Only what a training step depends on, so evaluation keys do not rerun the benchmark.
        gmm_config={
            **{k: config["gmm"][k] for k in ("batch_size", "ours", "inn", "cinn")},
            "networks": {n: config["gmm"]["networks"][n] for n in GMM_NETWORKS},
        },
        models=GMM_MODELS,
        iterations=config["gmm"]["benchmark_iterations"],
        device=stage_device(config, "benchmark_gmm_speed"),
    script:
        "../scripts/benchmark_gmm_speed.py"


GMM_EVAL_TARGETS = [
    "results/tables/gmm_metrics.csv",
    *expand(
        "results/figures/training_gmm_{network}_{labels}.png",
        network=GMM_NETWORKS,
        labels=GMM_LABEL_MAPS,
    ),
    "results/tables/training_speed.csv",
    *expand("results/figures/fig5_1_{stem}.png", stem=FIG5_1_LABELS),
    *(["results/figures/fig5_2_inn_variants.png"] if "all" in GMM_LABEL_MAPS else []),
]
