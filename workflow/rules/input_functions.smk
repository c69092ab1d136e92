# Rule inputs (and a priority) computed from the configuration and the wildcards, one named
# function each (the rule files define the rules and names used here, which Snakemake has read by
# the time one is called), and the code fingerprint every rule passes as a param.
from replicate.fingerprints import code_fingerprint


def code_of(script):
    """The fingerprint of the library code that workflow/scripts/<script> runs (its modules'
    digests, docstrings and comments aside, and the versions of replicate, torch and sbi): a
    param of every rule, so that a change to that code reruns the rule and what depends on it.
    """
    return code_fingerprint(Path(workflow.basedir, "workflow", "scripts", script))


def pretrained_ablation_inputs(wildcards):
    """Per dataset and seed of the ablation: the pretrained pipeline's metrics of ours and of the
    cINN, its references (the MLP on the code) and its auto-encoder's reconstruction error.
    """
    return [
        path.format(dataset=dataset, seed=seed)
        for dataset in LATENT_DATASETS
        for seed in JOINT["ablation_seeds"]
        for path in (
            *expand(
                rules.evaluate_latent_generator.output[0],
                model=["ours", "cinn"],
                allow_missing=True,
            ),
            rules.evaluate_latent_references.output[0],
            rules.train_autoencoder.output.metrics,
        )
    ]


def joint_ablation_inputs(wildcards):
    """The evaluation of every configured joint variant, dataset and seed."""
    return expand(
        rules.evaluate_joint_latent.output[0],
        dataset=LATENT_DATASETS,
        variant=JOINT["ablation_variants"],
        seed=JOINT["ablation_seeds"],
    )


def kinematics_training_priority(wildcards):
    """sbi's NPE trainings are the DAG's longest jobs: they start first (common.smk)."""
    return (
        PRIORITY_FIRST
        if kinematics_settings.model_kind(wildcards.model) == "npe"
        else 0
    )
