# E4: the inverse-kinematics benchmark (Kruse et al. 2021): test observations and their
# rejection-sampling reference, ours at every configured eps, the INN and the cINN trained on
# fresh simulator draws, each scored against the reference (MMD, C2ST, re-simulation error,
# coverage), the table and two figures. A diverged run still writes its outputs (NaN scores).
import re

# Imported as a module: every rule file shares one namespace, and gmm.smk has its own
# model_names and training_settings.
from replicate.experiments.kinematics import settings as kinematics_settings

KIN = config["kinematics"]
KIN_MODELS = kinematics_settings.model_names(KIN)
KIN_EVAL_KEYS = {k: KIN[k] for k in ("n_posterior_samples", "c2st_observations")}
KIN_REFERENCE_KEYS = {
    k: KIN[k]
    for k in ("n_observations", "observation_seed", "n_posterior_samples", "reference")
}
KIN_SCORES = "results/kinematics/scores/{model}_seed{seed}.json"
KIN_SAMPLES = "results/kinematics/samples/{model}_seed{seed}.npz"


# Tables and figures take seconds: on a cluster they run on the submit host.
localrules:
    kinematics_metrics,
    plot_kinematics_posteriors,
    plot_kinematics_eps,


rule kinematics_reference:
    output:
        reference="results/kinematics/reference.npz",
        # Further accepted draws, scored like a model's samples: every metric's floor.
        held_out="results/kinematics/samples/rejection.npz",
        summary="results/kinematics/reference.json",
    log:
        "results/logs/kinematics/reference.log",
    conda:
        "../../envs/replicate.yaml"
    # Simulation and distances on PyTorch's thread pool; the draws stay one stream (same numbers
    # with any thread count). Snakemake gives it at most --cores.
    threads: 8
    resources:
        runtime=60,
        mem_mb=4000,
    params:
        code=code_of("kinematics_reference.py"),
        settings=KIN_REFERENCE_KEYS,
    script:
        "../scripts/kinematics_reference.py"


rule train_kinematics:
    output:
        model="results/kinematics/models/{model}_seed{seed}.safetensors",
        status="results/kinematics/models/{model}_seed{seed}.json",
        history="results/kinematics/models/{model}_seed{seed}_history.csv",
    log:
        "results/logs/kinematics/train_{model}_seed{seed}.log",
    benchmark:
        "results/benchmarks/kinematics/train_{model}_seed{seed}.tsv"
    wildcard_constraints:
        model="|".join(map(re.escape, KIN_MODELS)),
    priority: kinematics_training_priority
    conda:
        "../../envs/replicate.yaml"
    threads: 2
    resources:
        gpu_jobs=gpu_jobs(config, "train_kinematics"),
        runtime=60,
        mem_mb=4000,
    params:
        code=code_of("train_kinematics.py"),
        # Only the settings this model trains under, so evaluation keys do not retrain it.
        settings=lambda wildcards: kinematics_settings.training_settings(
            KIN, wildcards.model
        ),
        device=stage_device(config, "train_kinematics"),
        # Saved every training.checkpoint_every iterations; deleted once the outputs are written.
        resume="results/kinematics/checkpoints/{model}_seed{seed}_last.safetensors",
    script:
        "../scripts/train_kinematics.py"


rule evaluate_kinematics:
    input:
        model=rules.train_kinematics.output.model,
        status=rules.train_kinematics.output.status,
        reference=rules.kinematics_reference.output.reference,
    output:
        samples=KIN_SAMPLES,
        scores=KIN_SCORES,
    log:
        "results/logs/kinematics/evaluate_{model}_seed{seed}.log",
    wildcard_constraints:
        model="|".join(map(re.escape, KIN_MODELS)),
    conda:
        "../../envs/replicate.yaml"
    threads: 1
    resources:
        gpu_jobs=gpu_jobs(config, "evaluate_kinematics"),
        runtime=30,
        mem_mb=4000,
    params:
        code=code_of("evaluate_kinematics.py"),
        settings=lambda wildcards: kinematics_settings.training_settings(
            KIN, wildcards.model
        ),
        eval_settings=KIN_EVAL_KEYS,
    script:
        "../scripts/evaluate_kinematics.py"


rule evaluate_kinematics_floor:
    input:
        reference=rules.kinematics_reference.output.reference,
        held_out=rules.kinematics_reference.output.held_out,
    output:
        scores="results/kinematics/scores/rejection.json",
    log:
        "results/logs/kinematics/evaluate_rejection.log",
    conda:
        "../../envs/replicate.yaml"
    threads: 1
    resources:
        runtime=30,
        mem_mb=4000,
    params:
        code=code_of("evaluate_kinematics_floor.py"),
        eval_settings=KIN_EVAL_KEYS,
    script:
        "../scripts/evaluate_kinematics_floor.py"


rule kinematics_metrics:
    input:
        rules.evaluate_kinematics_floor.output.scores,
        expand(KIN_SCORES, model=KIN_MODELS, seed=SEEDS),
    output:
        csv=report(
            "results/tables/kinematics_metrics.csv",
            caption="../report/kinematics_metrics.rst",
            category="E4 inverse kinematics",
        ),
        md="results/tables/kinematics_metrics.md",
    log:
        "results/logs/kinematics/kinematics_metrics.log",
    conda:
        "../../envs/replicate.yaml"
    threads: 1
    resources:
        runtime=10,
        mem_mb=2000,
    params:
        code=code_of("kinematics_metrics.py"),
        model_order=["rejection", *KIN_MODELS],
    script:
        "../scripts/kinematics_metrics.py"


rule plot_kinematics_posteriors:
    input:
        reference=rules.kinematics_reference.output.reference,
        samples=expand(KIN_SAMPLES, model=KIN_MODELS, seed=SEEDS[0]),
    output:
        png=report(
            "results/figures/kinematics_posteriors.png",
            caption="../report/kinematics_posteriors.rst",
            category="E4 inverse kinematics",
        ),
        pdf="results/figures/kinematics_posteriors.pdf",
    log:
        "results/logs/kinematics/plot_kinematics_posteriors.log",
    conda:
        "../../envs/replicate.yaml"
    threads: 1
    resources:
        runtime=10,
        mem_mb=2000,
    params:
        code=code_of("plot_kinematics_posteriors.py"),
        models=KIN_MODELS,
        observations=KIN["figure_observations"],
    script:
        "../scripts/plot_kinematics_posteriors.py"


rule plot_kinematics_eps:
    input:
        csv=rules.kinematics_metrics.output.csv,
    output:
        png=report(
            "results/figures/kinematics_eps.png",
            caption="../report/kinematics_eps.rst",
            category="E4 inverse kinematics",
        ),
        pdf="results/figures/kinematics_eps.pdf",
    log:
        "results/logs/kinematics/plot_kinematics_eps.log",
    conda:
        "../../envs/replicate.yaml"
    threads: 1
    resources:
        runtime=10,
        mem_mb=2000,
    params:
        code=code_of("plot_kinematics_eps.py"),
    script:
        "../scripts/plot_kinematics_eps.py"


KINEMATICS_TARGETS = [
    rules.kinematics_metrics.output.md,
    rules.plot_kinematics_posteriors.output.png,
    rules.plot_kinematics_eps.output.png,
]
