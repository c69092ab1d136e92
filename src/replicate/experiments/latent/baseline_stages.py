"""The E3 pipeline stages beyond the paper (workflow/rules/latent_eval.smk): the judging classifier,
the cINN baseline, the evaluation of generated samples and the metrics table; one call per rule."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from replicate.data import load_images
from replicate.experiments.latent.evaluation import (
    CHANCE_ACCURACY,
    MODEL_NAMES,
    TABLE_METRICS,
    latent_metrics_markdown,
    latent_metrics_table,
)
from replicate.experiments.latent.judges import (
    classifier_outputs,
    code_classifier_accuracy,
    feature_frechet_distance,
    load_classifier,
    probe_accuracy,
    save_classifier,
    train_classifier,
)
from replicate.experiments.latent.models import (
    N_CLASSES,
    load_latent_cinn,
    save_latent_cinn,
)
from replicate.experiments.latent.training import train_latent_cinn
from replicate.metrics import accuracy
from replicate.runtime import (
    use_threads,
    write_json,
    write_npz,
    write_table,
)

__all__ = [
    "cinn_samples_stage",
    "cinn_stage",
    "classifier_stage",
    "evaluate_model_stage",
    "latent_metrics_stage",
    "reference_stage",
]

log = logging.getLogger("replicate")


@torch.no_grad()
def _batched(fn: Callable[..., Tensor], *arrays: Tensor, batch_size: int = 2000) -> Tensor:
    n = len(arrays[0])
    return torch.cat(
        [fn(*(a[s : s + batch_size] for a in arrays)) for s in range(0, n, batch_size)]
    )


# -- pipeline stages: one call per Snakemake rule ---------------------------------------------
def classifier_stage(
    data_dir: str | os.PathLike,
    dataset: str,
    latent_config: Mapping[str, Any],
    seed: int,
    model_path: str | os.PathLike,
    eval_path: str | os.PathLike,
    device: str = "cpu",
    threads: int | None = None,
) -> dict[str, Any]:
    """Rule ``train_latent_classifier``: train on real training images, log test accuracy."""
    from replicate.runtime import resolve_device

    use_threads(threads)
    train_x, train_y = load_images(data_dir, dataset, "train", latent_config["n_train"])
    test_x, test_y = load_images(data_dir, dataset, "test", latent_config["n_test"])
    model, summary = train_classifier(
        train_x, train_y, latent_config["classifier"], seed, resolve_device(device)
    )
    model = model.cpu()
    logits, _ = classifier_outputs(model, test_x)
    result = {
        "dataset": dataset,
        "seed": seed,
        "test_accuracy": accuracy(logits, test_y),
        "train_accuracy": float(accuracy(classifier_outputs(model, train_x)[0], train_y)),
        "n_train": len(train_x),
        "n_test": len(test_x),
        **summary,
    }
    log.info("%s classifier: test accuracy %.4f", dataset, result["test_accuracy"])
    save_classifier(model_path, model)
    write_json(eval_path, result)
    return result


def cinn_stage(
    latents_path: str | os.PathLike,
    latent_config: Mapping[str, Any],
    seed: int,
    model_path: str | os.PathLike,
    checkpoint_path: str | os.PathLike | None = None,
    device: str = "cpu",
    threads: int | None = None,
    history_path: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Rule ``train_latent_cinn``: one seed's cINN on the training latents, saved (resumed from
    ``checkpoint_path`` when a killed job is rerun); its per-epoch training NLL and timings go to
    ``history_path`` (JSON) when given."""
    from replicate.runtime import resolve_device

    use_threads(threads)
    with np.load(latents_path) as f:
        train_u, train_y = f["train_u"], f["train_y"]
    model, summary = train_latent_cinn(
        train_u,
        train_y,
        latent_config["flow"],
        int(latent_config["cinn"]["epochs"]),
        seed,
        resolve_device(device),
        checkpoint_path=checkpoint_path,
    )
    save_latent_cinn(model_path, model.cpu(), latent_config["flow"], seed)
    if history_path is not None:
        write_json(history_path, {"model": "cinn", "seed": seed, **summary})
    log.info("trained latent cINN seed %d in %.1f s", seed, summary["seconds"])
    return summary


def cinn_samples_stage(
    cinn_path: str | os.PathLike,
    autoencoder_path: str | os.PathLike,
    latent_config: Mapping[str, Any],
    seed: int,
    samples_path: str | os.PathLike,
    device: str = "cpu",
) -> None:
    """Rule ``sample_latent_cinn``: as ``samples_seed{seed}.npz`` of ours, from the cINN."""
    from replicate.experiments.latent.autoencoder import load_autoencoder
    from replicate.experiments.latent.evaluation import sample_images
    from replicate.runtime import resolve_device

    dev = resolve_device(device)
    model = load_latent_cinn(cinn_path, latent_config["flow"], dev)
    ae = load_autoencoder(autoencoder_path, latent_config["autoencoder"], dev)
    n_per_class = int(latent_config["n_eval_samples_per_class"])
    images, labels = sample_images(model, ae, n_per_class, seed)
    write_npz(samples_path, images=images, labels=labels)
    log.info("wrote %d cINN samples (seed %d) to %s", len(images), seed, samples_path)


def evaluate_model_stage(
    model_name: str,
    model_path: str | os.PathLike,
    samples_path: str | os.PathLike,
    latents_path: str | os.PathLike,
    classifier_path: str | os.PathLike,
    data_dir: str | os.PathLike,
    dataset: str,
    latent_config: Mapping[str, Any],
    seed: int,
    json_path: str | os.PathLike,
    threads: int | None = None,
) -> dict[str, Any]:
    """Rule ``evaluate_latent_generator``: every metric of one model, dataset and seed, as JSON.

    ``test_accuracy``: ours through the forward pass, the cINN by Bayes' rule. ``sample_accuracy``
    and ``frechet_distance``: the independent classifier on the generated images (vs their
    requested labels; vs the real test images' features). ``label_probe_accuracy``: a logistic
    regression from z to y, fitted on the training latents' z, scored on the test latents' z; ours'
    z = f_z([u, 0]), the cINN's z = f(u; true label).
    """
    use_threads(threads)
    with np.load(latents_path) as f:
        lat = {k: f[k] for k in ("train_u", "train_y", "test_u", "test_y")}
    u = {s: torch.as_tensor(lat[f"{s}_u"], dtype=torch.float32) for s in ("train", "test")}
    y = {s: torch.as_tensor(lat[f"{s}_y"], dtype=torch.int64) for s in ("train", "test")}
    if model_name == "ours":
        from replicate.experiments.latent.models import load_latent_flow

        flow = load_latent_flow(model_path, latent_config["flow"])
        scores = _batched(flow.predict, u["test"])
        z = {s: _batched(flow.encode, u[s]) for s in u}
    elif model_name == "cinn":
        cinn = load_latent_cinn(model_path, latent_config["flow"])
        scores = _batched(cinn.classify, u["test"])
        z = {s: _batched(cinn.encode, u[s], y[s]) for s in u}
    else:
        raise ValueError(f"unknown model '{model_name}': use ours or cinn")
    test_accuracy = accuracy(scores, y["test"])
    probe = probe_accuracy(z["train"].numpy(), lat["train_y"], z["test"].numpy(), lat["test_y"])

    classifier = load_classifier(classifier_path)
    with np.load(samples_path) as f:
        images, labels = f["images"], f["labels"]
    logits, features = classifier_outputs(classifier, images)
    real, _ = load_images(data_dir, dataset, "test", latent_config["n_test"])
    _, real_features = classifier_outputs(classifier, real)
    result = {
        "dataset": dataset,
        "model": model_name,
        "seed": seed,
        "test_accuracy": test_accuracy,
        "test_accuracy_method": "forward pass" if model_name == "ours" else "Bayes' rule",
        "sample_accuracy": accuracy(logits, labels),
        "frechet_distance": feature_frechet_distance(features, real_features),
        "label_probe_accuracy": probe,
        "chance_accuracy": CHANCE_ACCURACY,
        "n_samples": len(images),
        "n_real_test": len(real),
    }
    log.info("%s %s seed %d: %s", dataset, model_name, seed, json.dumps(result))
    write_json(json_path, result)
    return result


def reference_stage(
    autoencoder_path: str | os.PathLike,
    latents_path: str | os.PathLike,
    classifier_path: str | os.PathLike,
    data_dir: str | os.PathLike,
    dataset: str,
    latent_config: Mapping[str, Any],
    json_path: str | os.PathLike,
    threads: int | None = None,
) -> list[dict[str, Any]]:
    """Rule ``evaluate_latent_references``: what the metrics give for non-generated images.

    Rows that put the generated models' numbers on a scale: the real test images (the
    classifier's own accuracy, the ceiling of ``sample_accuracy``), real training images (as many
    as one model generates: the floor of the Frechet distance at that sample size), and the
    auto-encoder's reconstructions of the test images (the best any generator in its latent space
    can look to the classifier). The probe column of the reconstructions row fits y from u itself:
    the label information a linear map finds in the latents before any flow. The ``test_accuracy``
    of the row ``MLP on the auto-encoder code`` (:func:`code_classifier_accuracy`) is what a
    classifier trained for nothing else reads from u: the scale for Table 1, whose forward pass
    classifies the same code.
    """
    from replicate.experiments.latent.autoencoder import load_autoencoder
    from replicate.experiments.latent.evaluation import decode_to_uint8

    use_threads(threads)
    classifier = load_classifier(classifier_path)
    real, real_labels = load_images(data_dir, dataset, "test", latent_config["n_test"])
    real_logits, real_features = classifier_outputs(classifier, real)
    n_generated = N_CLASSES * int(latent_config["n_eval_samples_per_class"])
    train_x, train_y = load_images(data_dir, dataset, "train", latent_config["n_train"])
    train_x, train_y = train_x[:n_generated], train_y[:n_generated]
    with np.load(latents_path) as f:
        lat = {k: f[k] for k in ("train_u", "train_y", "test_u", "test_y")}
    ae = load_autoencoder(autoencoder_path, latent_config["autoencoder"])
    recon = decode_to_uint8(ae, torch.as_tensor(lat["test_u"]))

    def row(model: str, n_samples: int, **metrics: float) -> dict[str, Any]:
        """One reference row: the metrics it has, NaN for the others."""
        entry = {
            "dataset": dataset,
            "model": model,
            "seed": None,
            **dict.fromkeys(TABLE_METRICS, float("nan")),
            **metrics,
            "n_samples": n_samples,
        }
        log.info("%s %s: %s", dataset, model, entry)
        return entry

    rows = [
        # The classifier's own test accuracy: the ceiling of sample_accuracy. The distance of the
        # test set to itself is 0 by definition, so it is left out.
        row(
            "real test images",
            len(real),
            sample_accuracy=accuracy(real_logits, real_labels),
        ),
        row(
            "MLP on the auto-encoder code",
            len(lat["test_u"]),
            test_accuracy=code_classifier_accuracy(
                lat["train_u"], lat["train_y"], lat["test_u"], lat["test_y"]
            ),
        ),
    ]
    for name, images, labels, probe in (
        ("real train images", train_x, train_y, float("nan")),
        (
            "auto-encoder reconstructions",
            recon,
            lat["test_y"],
            probe_accuracy(lat["train_u"], lat["train_y"], lat["test_u"], lat["test_y"]),
        ),
    ):
        logits, features = classifier_outputs(classifier, images)
        rows.append(
            row(
                name,
                len(images),
                sample_accuracy=accuracy(logits, labels),
                frechet_distance=feature_frechet_distance(features, real_features),
                label_probe_accuracy=probe,
            )
        )
    write_json(json_path, {"rows": rows})
    return rows


def latent_metrics_stage(
    eval_paths: Sequence[str | os.PathLike],
    csv_path: str | os.PathLike,
    md_path: str | os.PathLike,
) -> pd.DataFrame:
    """Rule ``latent_metrics``: per-seed JSONs (and reference rows) -> CSV + Markdown table.

    A JSON holding ``{"rows": [...]}`` contributes each row; any other JSON is one record.
    """
    records: list[dict[str, Any]] = []
    for path in eval_paths:
        data = json.loads(Path(path).read_text())
        records.extend(data["rows"] if "rows" in data else [data])
    table = latent_metrics_table(records)
    # ours, then the cINN, then the reference rows; datasets in the order the inputs list them.
    table["_dataset"] = table["dataset"].map(
        {d: i for i, d in enumerate(dict.fromkeys(r["dataset"] for r in records))}
    )
    table["_model"] = table["model"].map(
        lambda m: list(MODEL_NAMES).index(m) if m in MODEL_NAMES else 2
    )
    table = table.sort_values(["_dataset", "_model"], kind="stable").drop(
        columns=["_dataset", "_model"]
    )
    table["model"] = table["model"].map(lambda m: MODEL_NAMES.get(m, f"reference: {m}"))
    table = table.reset_index(drop=True)
    write_table(table, csv_path, md_path, latent_metrics_markdown(table))
    log.info("latent metrics:\n%s", table.to_string(index=False))
    return table
