# The linear-Gaussian check (beyond the paper; docs/eps.md): ours at every eps / s, with eps
# learned, and sbi's NPE, trained at every noise std s and seed on the same simulations and scored
# against the exact posterior; the table of mean +- std over seeds; and NPE's fairness check
# against sbibm's published number. The models are small: every run trains on one CPU core, in
# seconds, and records its training time itself (no `benchmark:`, which marks the long trainings
# that profiles/slurm sizes and may give a GPU).
import re

# Imported as a module: every rule file shares one namespace.
from replicate.experiments.linear_gaussian import settings as lg_settings

LG = config["linear_gaussian"]
LG_MODELS = lg_settings.model_names(LG)
LG_NOISE = [f"{float(s):g}" for s in LG["noise_std"]]
LG_RUN = "results/linear_gaussian/runs/noise{noise}_{model}_seed{seed}.json"


localrules:
    linear_gaussian,
    plot_linear_gaussian_eps,


rule run_linear_gaussian:
    output:
        LG_RUN,
    log:
        "results/logs/linear_gaussian/run_noise{noise}_{model}_seed{seed}.log",
    wildcard_constraints:
        model="|".join(map(re.escape, LG_MODELS)),
        noise="|".join(map(re.escape, LG_NOISE)),
    conda:
        "../../envs/replicate.yaml"
    threads: 1
    resources:
        runtime=30,
        mem_mb=2000,
    params:
        code=code_of("run_linear_gaussian.py"),
        # Only the settings this model's run depends on, so another model's keys do not rerun it.
        settings=lambda wildcards: lg_settings.run_settings(LG, wildcards.model),
    script:
        "../scripts/run_linear_gaussian.py"


rule linear_gaussian:
    input:
        expand(LG_RUN, noise=LG_NOISE, model=LG_MODELS, seed=SEEDS),
    output:
        # Every run's numbers (the CSV) and their mean +- std over seeds (the Markdown).
        csv=report(
            "results/tables/linear_gaussian.csv",
            caption="../report/linear_gaussian.rst",
            category="Linear-Gaussian check of eps",
        ),
        md="results/tables/linear_gaussian.md",
    log:
        "results/logs/linear_gaussian/linear_gaussian.log",
    conda:
        "../../envs/replicate.yaml"
    threads: 1
    resources:
        runtime=10,
        mem_mb=2000,
    params:
        code=code_of("linear_gaussian.py"),
        model_order=LG_MODELS,
    script:
        "../scripts/linear_gaussian.py"


rule plot_linear_gaussian_eps:
    input:
        csv=rules.linear_gaussian.output.csv,
    output:
        png=report(
            "results/figures/linear_gaussian_eps.png",
            caption="../report/linear_gaussian_eps.rst",
            category="Linear-Gaussian check of eps",
        ),
        pdf="results/figures/linear_gaussian_eps.pdf",
    log:
        "results/logs/linear_gaussian/plot_linear_gaussian_eps.log",
    conda:
        "../../envs/replicate.yaml"
    threads: 1
    resources:
        runtime=10,
        mem_mb=2000,
    params:
        code=code_of("plot_linear_gaussian_eps.py"),
        n_samples=LG["n_samples"],
        data_dim=len(LG["forward"][0]),
    script:
        "../scripts/plot_linear_gaussian_eps.py"


rule npe_sbibm_check:
    output:
        csv="results/tables/npe_sbibm_check.csv",
        md="results/tables/npe_sbibm_check.md",
    log:
        "results/logs/linear_gaussian/npe_sbibm_check.log",
    conda:
        "../../envs/replicate.yaml"
    # sbibm's classifier (up to 10,000 epochs per observation) on PyTorch's and scikit-learn's
    # thread pools.
    threads: 2
    resources:
        runtime=120,
        mem_mb=4000,
    params:
        code=code_of("npe_sbibm_check.py"),
        settings={k: v for k, v in LG["sbibm_check"].items() if k != "in_all"},
    script:
        "../scripts/npe_sbibm_check.py"


LINEAR_GAUSSIAN_TARGETS = [
    rules.linear_gaussian.output.md,
    rules.plot_linear_gaussian_eps.output.png,
] + ([rules.npe_sbibm_check.output.md] if LG["sbibm_check"]["in_all"] else [])
