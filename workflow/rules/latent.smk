# E3: the conditional flow in an auto-encoder's latent space (paper 5.2): auto-encoder
# pretraining, latent encoding, one flow per seed, Figures 5.3 and 5.4, Table 1.
LATENT = config["latent"]
LATENT_DATASETS = LATENT["datasets"]
# The auto-encoder is trained once per dataset, seeded by the first of `seeds`.
AE_SEED = SEEDS[0]
# Only the keys each rule depends on, so editing another key does not retrain the model.
AE_SETTINGS = {k: LATENT[k] for k in ("n_train", "n_test", "autoencoder")}
FLOW_SETTINGS = {"flow": LATENT["flow"]}


# Tables and figures take seconds: on a cluster they run on the submit host instead of queueing
# as jobs of their own.
localrules:
    plot_reconstructions,
    plot_fig5_3,
    plot_fig5_4,
    table1,


rule train_autoencoder:
    input:
        rules.prepare_data.output[0],
    output:
        model="results/latent/{dataset}/autoencoder.safetensors",
        metrics="results/latent/{dataset}/autoencoder_metrics.json",
    log:
        "results/logs/latent/train_autoencoder_{dataset}.log",
    benchmark:
        "results/benchmarks/latent/train_autoencoder_{dataset}.tsv"
    priority: PRIORITY_FIRST
    conda:
        "../../envs/replicate.yaml"
    threads: 2
    resources:
        gpu_jobs=gpu_jobs(config, "train_autoencoder"),
        runtime=24 * 60,
        mem_mb=8000,
    params:
        code=code_of("train_autoencoder.py"),
        data_dir=lambda wildcards, input: str(Path(input[0]).parent),
        settings=AE_SETTINGS,
        seed=AE_SEED,
        # Not an output: Snakemake must not delete it when a killed job is rerun.
        checkpoint="results/latent/{dataset}/checkpoints/autoencoder_last.safetensors",
        device=stage_device(config, "train_autoencoder"),
    script:
        "../scripts/train_autoencoder.py"


rule encode_latents:
    input:
        verified=rules.prepare_data.output[0],
        model=rules.train_autoencoder.output.model,
    output:
        "results/latent/{dataset}/latents.npz",
    log:
        "results/logs/latent/encode_latents_{dataset}.log",
    priority: PRIORITY_EARLY
    conda:
        "../../envs/replicate.yaml"
    threads: 2
    resources:
        gpu_jobs=gpu_jobs(config, "encode_latents"),
        runtime=30,
        mem_mb=4000,
    params:
        code=code_of("encode_latents.py"),
        data_dir=lambda wildcards, input: str(Path(input.verified).parent),
        settings=AE_SETTINGS,
        device=stage_device(config, "encode_latents"),
    script:
        "../scripts/encode_latents.py"


rule plot_reconstructions:
    input:
        verified=rules.prepare_data.output[0],
        model=rules.train_autoencoder.output.model,
    output:
        report(
            "results/figures/reconstructions_{dataset}.png",
            caption="../report/reconstructions.rst",
            category="Latent flow (E3)",
        ),
        "results/figures/reconstructions_{dataset}.pdf",
    log:
        "results/logs/latent/plot_reconstructions_{dataset}.log",
    conda:
        "../../envs/replicate.yaml"
    threads: 1
    resources:
        gpu_jobs=gpu_jobs(config, "plot_reconstructions"),
        runtime=10,
        mem_mb=2000,
    params:
        code=code_of("plot_reconstructions.py"),
        data_dir=lambda wildcards, input: str(Path(input.verified).parent),
        settings=AE_SETTINGS,
    script:
        "../scripts/plot_reconstructions.py"


rule train_latent_flow:
    input:
        rules.encode_latents.output[0],
    output:
        model="results/latent/{dataset}/flow_seed{seed}.safetensors",
        history="results/latent/{dataset}/flow_seed{seed}_history.json",
    log:
        "results/logs/latent/train_flow_{dataset}_seed{seed}.log",
    benchmark:
        "results/benchmarks/latent/train_flow_{dataset}_seed{seed}.tsv"
    priority: PRIORITY_EARLY
    conda:
        "../../envs/replicate.yaml"
    threads: 1
    resources:
        gpu_jobs=gpu_jobs(config, "train_latent_flow"),
        runtime=6 * 60,
        mem_mb=4000,
    params:
        code=code_of("train_latent_flow.py"),
        settings=FLOW_SETTINGS,
        checkpoint="results/latent/{dataset}/checkpoints/flow_seed{seed}_last.safetensors",
        device=stage_device(config, "train_latent_flow"),
    script:
        "../scripts/train_latent_flow.py"


rule evaluate_latent_flow:
    input:
        latents=rules.encode_latents.output[0],
        flow=rules.train_latent_flow.output.model,
    output:
        "results/latent/{dataset}/flow_seed{seed}_eval.json",
    log:
        "results/logs/latent/evaluate_flow_{dataset}_seed{seed}.log",
    conda:
        "../../envs/replicate.yaml"
    threads: 1
    resources:
        gpu_jobs=gpu_jobs(config, "evaluate_latent_flow"),
        runtime=30,
        mem_mb=4000,
    params:
        code=code_of("evaluate_latent_flow.py"),
        settings=FLOW_SETTINGS,
    script:
        "../scripts/evaluate_latent_flow.py"


rule sample_latent_flow:
    input:
        flow=rules.train_latent_flow.output.model,
        autoencoder=rules.train_autoencoder.output.model,
    output:
        "results/latent/{dataset}/samples_seed{seed}.npz",
    log:
        "results/logs/latent/sample_flow_{dataset}_seed{seed}.log",
    conda:
        "../../envs/replicate.yaml"
    threads: 1
    resources:
        gpu_jobs=gpu_jobs(config, "sample_latent_flow"),
        runtime=30,
        mem_mb=4000,
    params:
        code=code_of("sample_latent_flow.py"),
        settings={
            "flow": LATENT["flow"],
            "autoencoder": LATENT["autoencoder"],
            "n_eval_samples_per_class": LATENT["n_eval_samples_per_class"],
        },
    script:
        "../scripts/sample_latent_flow.py"


rule plot_fig5_3:
    input:
        rules.sample_latent_flow.output[0].replace("{seed}", str(SEEDS[0])),
    output:
        report(
            "results/figures/fig5_3_samples_{dataset}.png",
            caption="../report/fig5_3.rst",
            category="Latent flow (E3)",
        ),
        "results/figures/fig5_3_samples_{dataset}.pdf",
    log:
        "results/logs/latent/plot_fig5_3_{dataset}.log",
    conda:
        "../../envs/replicate.yaml"
    threads: 1
    resources:
        runtime=10,
        mem_mb=2000,
    params:
        code=code_of("plot_fig5_3.py"),
        n_per_class=LATENT["n_samples_per_class"],
    script:
        "../scripts/plot_fig5_3.py"


rule plot_fig5_4:
    input:
        flow=f"results/latent/{{dataset}}/flow_seed{SEEDS[0]}.safetensors",
        autoencoder=rules.train_autoencoder.output.model,
    output:
        report(
            "results/figures/fig5_4_style_{dataset}.png",
            caption="../report/fig5_4.rst",
            category="Latent flow (E3)",
        ),
        "results/figures/fig5_4_style_{dataset}.pdf",
        images=f"results/latent/{{dataset}}/style_seed{SEEDS[0]}.npz",
    log:
        "results/logs/latent/plot_fig5_4_{dataset}.log",
    conda:
        "../../envs/replicate.yaml"
    threads: 1
    resources:
        gpu_jobs=gpu_jobs(config, "plot_fig5_4"),
        runtime=10,
        mem_mb=2000,
    params:
        code=code_of("plot_fig5_4.py"),
        settings={
            "flow": LATENT["flow"],
            "autoencoder": LATENT["autoencoder"],
            "n_style_rows": LATENT["n_style_rows"],
        },
        seed=SEEDS[0],
    script:
        "../scripts/plot_fig5_4.py"


rule table1:
    input:
        expand(
            rules.evaluate_latent_flow.output[0],
            dataset=LATENT_DATASETS,
            seed=SEEDS,
        ),
    output:
        csv=report(
            "results/tables/table1.csv",
            caption="../report/table1.rst",
            category="Latent flow (E3)",
        ),
        md="results/tables/table1.md",
    log:
        "results/logs/latent/table1.log",
    conda:
        "../../envs/replicate.yaml"
    threads: 1
    resources:
        runtime=10,
        mem_mb=2000,
    params:
        code=code_of("make_table1.py"),
    script:
        "../scripts/make_table1.py"


LATENT_TARGETS = [
    "results/tables/table1.csv",
    *expand(
        "results/figures/{name}_{dataset}.png",
        name=["reconstructions", "fig5_3_samples", "fig5_4_style"],
        dataset=LATENT_DATASETS,
    ),
    *expand(
        "results/latent/{dataset}/samples_seed{seed}.npz",
        dataset=LATENT_DATASETS,
        seed=SEEDS,
    ),
]
