import re

# E3, issue 29: the auto-encoder and the flow trained together (GLF's loss) next to the
# pretrained pipeline, to locate Table 1's Fashion-MNIST gap. Part of `all` only with
# `latent.joint.in_all` (each run costs what pretraining the auto-encoder does); otherwise
# `snakemake --cores 2 latent_ablation`.
JOINT = LATENT["joint"]
JOINT_SETTINGS = {
    k: LATENT[k] for k in ("n_train", "n_test", "autoencoder", "flow", "joint")
}
JOINT_EVAL_SETTINGS = {
    **JOINT_SETTINGS,
    "n_eval_samples_per_class": LATENT["n_eval_samples_per_class"],
    "cinn": LATENT["cinn"],  # the baseline, trained on each joint model's codes
}


localrules:
    latent_ablation,


rule train_joint_latent:
    input:
        rules.prepare_data.output[0],
    output:
        model="results/latent/{dataset}/joint/{variant}_seed{seed}.safetensors",
        history="results/latent/{dataset}/joint/{variant}_seed{seed}_history.json",
    log:
        "results/logs/latent/train_joint_{dataset}_{variant}_seed{seed}.log",
    benchmark:
        "results/benchmarks/latent/train_joint_{dataset}_{variant}_seed{seed}.tsv"
    wildcard_constraints:
        variant="|".join(map(re.escape, JOINT["variants"])),
    conda:
        "../../envs/replicate.yaml"
    threads: 2
    resources:
        gpu_jobs=gpu_jobs(config, "train_joint_latent"),
        runtime=24 * 60,
        mem_mb=8000,
    params:
        code=code_of("train_joint_latent.py"),
        data_dir=lambda wildcards, input: str(Path(input[0]).parent),
        settings=JOINT_SETTINGS,
        # Not an output: Snakemake must not delete it when a killed job is rerun.
        checkpoint="results/latent/{dataset}/checkpoints/joint_{variant}_seed{seed}_last.safetensors",
        device=stage_device(config, "train_joint_latent"),
    script:
        "../scripts/train_joint_latent.py"


rule evaluate_joint_latent:
    input:
        model=rules.train_joint_latent.output.model,
        classifier=rules.train_latent_classifier.output.model,
        verified=rules.prepare_data.output[0],
    output:
        "results/latent/{dataset}/joint/{variant}_seed{seed}_eval.json",
    log:
        "results/logs/latent/evaluate_joint_{dataset}_{variant}_seed{seed}.log",
    conda:
        "../../envs/replicate.yaml"
    threads: 1
    resources:
        runtime=60,
        mem_mb=8000,
    params:
        code=code_of("evaluate_joint_latent.py"),
        data_dir=lambda wildcards, input: str(Path(input.verified).parent),
        settings=JOINT_EVAL_SETTINGS,
    script:
        "../scripts/evaluate_joint_latent.py"


rule latent_ablation:
    input:
        pretrained=pretrained_ablation_inputs,
        joint=joint_ablation_inputs,
    output:
        csv="results/tables/latent_ablation.csv",
        md="results/tables/latent_ablation.md",
    log:
        "results/logs/latent/latent_ablation.log",
    conda:
        "../../envs/replicate.yaml"
    threads: 1
    resources:
        runtime=10,
        mem_mb=2000,
    params:
        code=code_of("make_latent_ablation.py"),
    script:
        "../scripts/make_latent_ablation.py"


LATENT_JOINT_TARGETS = rules.latent_ablation.output if JOINT["in_all"] else []
