"""The E3 pipeline stages: one call per Snakemake rule (workflow/rules/latent*.smk), each reading
the rule's inputs, calling the library and writing its outputs; the maths lives in the sibling
modules, the thread pool and the device come from :func:`replicate.runtime.run_stage`.

- the paper's experiment (``latent.smk``): the auto-encoder, the latents, the flow, Figures 5.3
  and 5.4, Table 1;
- beyond the paper (``latent_eval.smk``): the judging classifier, the cINN baseline, every
  generator's metrics and the references that put them on a scale;
- issue 29 (``latent_joint.smk``): the auto-encoder and the flow trained together, and the
  ablation table that sets them next to the pretrained pipeline.

The figure stages import their figure modules themselves: matplotlib and seaborn take about a
second to import, which every training and evaluation job would otherwise pay at its start.
"""

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

from replicate.checkpoints import discard_resumable
from replicate.data import load_images
from replicate.experiments.latent.autoencoder import (
    encode_images,
    load_autoencoder,
    reconstruction_error,
    save_autoencoder,
    to_unit_images,
    train_autoencoder,
)
from replicate.experiments.latent.evaluation import (
    CHANCE_ACCURACY,
    PAPER_ACCURACY,
    ablation_table,
    decode_to_uint8,
    evaluate_latent_flow,
    latent_metrics_markdown,
    latent_metrics_report,
    pretrained_ablation_row,
    reference_rows,
    sample_images,
    style_images,
    table1,
    table1_markdown,
)
from replicate.experiments.latent.joint import load_joint, save_joint, train_joint
from replicate.experiments.latent.judges import (
    classifier_outputs,
    code_classifier_accuracy,
    judge_images,
    load_classifier,
    probe_accuracy,
    save_classifier,
    train_classifier,
)
from replicate.experiments.latent.models import (
    N_CLASSES,
    LatentCINN,
    LatentFlow,
    load_latent_cinn,
    load_latent_flow,
    save_latent_cinn,
    save_latent_flow,
)
from replicate.experiments.latent.training import train_latent_cinn, train_latent_flow
from replicate.files import write_json, write_npz, write_table
from replicate.metrics import accuracy
from replicate.runtime import resolve_device

__all__ = [
    "ablation_table_stage",
    "autoencoder_stage",
    "classifier_stage",
    "encode_stage",
    "evaluate_joint_stage",
    "evaluate_model_stage",
    "evaluate_stage",
    "fig5_3_stage",
    "fig5_4_stage",
    "joint_stage",
    "latent_metrics_stage",
    "latent_model_stage",
    "reconstruction_figure_stage",
    "reference_stage",
    "samples_stage",
    "table1_stage",
    "training_curves_stage",
]

log = logging.getLogger("replicate")

# The models on latents, by the name the rules give them: how each loads.
LOADERS: dict[str, Callable[..., LatentFlow | LatentCINN]] = {
    "ours": load_latent_flow,
    "cinn": load_latent_cinn,
}


def _loader(model: str) -> Callable[..., LatentFlow | LatentCINN]:
    if model not in LOADERS:
        raise ValueError(f"unknown model '{model}': use one of {sorted(LOADERS)}")
    return LOADERS[model]


@torch.no_grad()
def _batched(fn: Callable[..., Tensor], *arrays: Tensor, batch_size: int = 2000) -> Tensor:
    n = len(arrays[0])
    return torch.cat(
        [fn(*(a[s : s + batch_size] for a in arrays)) for s in range(0, n, batch_size)]
    )


def _latents(path: str | os.PathLike) -> dict[str, np.ndarray]:
    with np.load(path) as f:
        return {k: f[k] for k in ("train_u", "train_y", "test_u", "test_y")}


# -- the paper's experiment (workflow/rules/latent.smk) ---------------------------------------
def autoencoder_stage(
    data_dir: str | os.PathLike,
    dataset: str,
    latent_config: Mapping[str, Any],
    seed: int,
    model_path: str | os.PathLike,
    metrics_path: str | os.PathLike,
    checkpoint_path: str | os.PathLike,
    device: str = "cpu",
) -> dict[str, Any]:
    """Rule ``train_autoencoder``: pretrain (resumably), save, write the reconstruction error
    of the training and the test images as JSON."""
    dev = resolve_device(device)
    config = latent_config["autoencoder"]
    train, _ = load_images(data_dir, dataset, "train", latent_config["n_train"])
    test, _ = load_images(data_dir, dataset, "test", latent_config["n_test"])
    model, summary = train_autoencoder(train, config, seed, checkpoint_path, dev)
    save_autoencoder(model_path, model, config)
    metrics = {
        **summary,
        "loss": "mean squared error per pixel, pixels in [0, 1]",
        "seed": seed,
        "n_train": len(train),
        "n_test": len(test),
        "train": reconstruction_error(model, train, device=str(dev)),
        "test": reconstruction_error(model, test, device=str(dev)),
    }
    log.info("test reconstruction error: mse %.5f per pixel", metrics["test"]["mse"])
    write_json(metrics_path, metrics)
    discard_resumable(checkpoint_path)  # only now: every output is written
    return metrics


def encode_stage(
    data_dir: str | os.PathLike,
    dataset: str,
    latent_config: Mapping[str, Any],
    autoencoder_path: str | os.PathLike,
    latents_path: str | os.PathLike,
    device: str = "cpu",
) -> None:
    """Rule ``encode_latents``: ``latents.npz`` with ``train_u, train_y, test_u, test_y``."""
    dev = resolve_device(device)
    model = load_autoencoder(autoencoder_path, latent_config["autoencoder"], dev)
    arrays: dict[str, np.ndarray] = {}
    for split, n in (("train", latent_config["n_train"]), ("test", latent_config["n_test"])):
        images, labels = load_images(data_dir, dataset, split, n)
        arrays[f"{split}_u"] = encode_images(model, images, device=str(dev))
        arrays[f"{split}_y"] = labels
        log.info("encoded %d %s images of %s", len(images), split, dataset)
    write_npz(latents_path, **arrays)


def reconstruction_figure_stage(
    data_dir: str | os.PathLike,
    dataset: str,
    latent_config: Mapping[str, Any],
    autoencoder_path: str | os.PathLike,
    png_path: str | os.PathLike,
    n_images: int = 20,
    device: str = "cpu",
) -> None:
    """Rule ``plot_reconstructions``: test originals (top row) above their reconstructions."""
    from replicate import plots
    from replicate.experiments.latent.figures import figure_reconstructions

    dev = resolve_device(device)
    model = load_autoencoder(autoencoder_path, latent_config["autoencoder"], dev)
    images, _ = load_images(data_dir, dataset, "test", latent_config["n_test"])
    images = images[:n_images]
    with torch.no_grad():
        recon = model(to_unit_images(images).to(dev))[:, 0].cpu()
    recon = (recon * 255).round().clamp(0, 255).to(torch.uint8).numpy()
    plots.use_style()
    plots.save_figure(figure_reconstructions(images, recon, dataset), png_path)


def latent_model_stage(
    model: str,
    latents_path: str | os.PathLike,
    latent_config: Mapping[str, Any],
    seed: int,
    model_path: str | os.PathLike,
    checkpoint_path: str | os.PathLike,
    history_path: str | os.PathLike,
    device: str = "cpu",
) -> dict[str, Any]:
    """Rules ``train_latent_flow`` (``model="ours"``) and ``train_latent_cinn`` (``"cinn"``):
    train one seed's model on the training latents (resumed from ``checkpoint_path`` when a
    killed job is rerun), save it, and write its per-epoch training NLL and timings as JSON."""
    dev = resolve_device(device)
    latents = _latents(latents_path)
    u, y, flow_config = latents["train_u"], latents["train_y"], latent_config["flow"]
    if model == "ours":
        trained, summary = train_latent_flow(u, y, flow_config, seed, checkpoint_path, dev)
        save_latent_flow(model_path, trained, flow_config, u.shape[1], seed)
    elif model == "cinn":
        epochs = int(latent_config["cinn"]["epochs"])
        trained, summary = train_latent_cinn(
            u, y, flow_config, epochs, seed, dev, checkpoint_path=checkpoint_path
        )
        save_latent_cinn(model_path, trained.cpu(), flow_config, seed)
    else:
        raise ValueError(f"unknown model '{model}': use ours or cinn")
    write_json(history_path, {"model": model, "seed": seed, **summary})
    discard_resumable(checkpoint_path)  # only now: every output is written
    log.info("trained latent %s seed %d in %.1f s", model, seed, summary["seconds"])
    return summary


def evaluate_stage(
    latents_path: str | os.PathLike,
    flow_path: str | os.PathLike,
    latent_config: Mapping[str, Any],
    dataset: str,
    seed: int,
    json_path: str | os.PathLike,
    device: str = "cpu",
) -> dict[str, Any]:
    """Rule ``evaluate_latent_flow``: test accuracy through the forward pass (Table 1), as JSON."""
    model = load_latent_flow(flow_path, latent_config["flow"], resolve_device(device))
    latents = _latents(latents_path)
    test = evaluate_latent_flow(model, latents["test_u"], latents["test_y"], seed=seed)
    train = evaluate_latent_flow(model, latents["train_u"], latents["train_y"], seed=seed)
    result = {
        "dataset": dataset,
        "seed": seed,
        "accuracy": test["accuracy"],
        "test_nll": test["nll"],
        "n_test": test["n_test"],
        "train_accuracy": train["accuracy"],
        "train_nll": train["nll"],
        "paper_accuracy": PAPER_ACCURACY.get(dataset),
    }
    log.info("%s seed %d: test accuracy %.4f", dataset, seed, test["accuracy"])
    write_json(json_path, result)
    return result


def samples_stage(
    model: str,
    model_path: str | os.PathLike,
    autoencoder_path: str | os.PathLike,
    latent_config: Mapping[str, Any],
    seed: int,
    samples_path: str | os.PathLike,
    device: str = "cpu",
) -> None:
    """Rules ``sample_latent_flow`` and ``sample_latent_cinn``: ``n_eval_samples_per_class``
    generated images per class of ``model`` (``ours`` or ``cinn``), class-major, as npz."""
    dev = resolve_device(device)
    generator = _loader(model)(model_path, latent_config["flow"], dev)
    ae = load_autoencoder(autoencoder_path, latent_config["autoencoder"], dev)
    n_per_class = int(latent_config["n_eval_samples_per_class"])
    images, labels = sample_images(generator, ae, n_per_class, seed)
    write_npz(samples_path, images=images, labels=labels)
    log.info("wrote %d images of %s (seed %d) to %s", len(images), model, seed, samples_path)


def fig5_3_stage(
    samples_path: str | os.PathLike, dataset: str, n_per_class: int, png_path: str | os.PathLike
) -> None:
    """Rule ``plot_fig5_3``: 10 rows (one per class) of the first ``n_per_class`` samples."""
    from replicate import plots
    from replicate.experiments.latent.figures import figure_samples_by_class

    with np.load(samples_path) as f:
        images, labels = f["images"], f["labels"]
    try:
        fig = figure_samples_by_class(images, labels, n_per_class, dataset)
    except ValueError as exc:
        raise ValueError(f"{samples_path}: {exc}") from None
    plots.use_style()
    plots.save_figure(fig, png_path)


def fig5_4_stage(
    flow_path: str | os.PathLike,
    autoencoder_path: str | os.PathLike,
    latent_config: Mapping[str, Any],
    dataset: str,
    seed: int,
    png_path: str | os.PathLike,
    images_path: str | os.PathLike,
    device: str = "cpu",
) -> None:
    """Rule ``plot_fig5_4``: rows of one fixed z each, the label varied 0..9 along the row."""
    from replicate import plots
    from replicate.experiments.latent.figures import figure_style

    dev = resolve_device(device)
    flow = load_latent_flow(flow_path, latent_config["flow"], dev)
    ae = load_autoencoder(autoencoder_path, latent_config["autoencoder"], dev)
    grid, z = style_images(flow, ae, int(latent_config["n_style_rows"]), seed)
    write_npz(images_path, images=grid, z=z)
    plots.use_style()
    plots.save_figure(figure_style(grid, dataset), png_path)


def training_curves_stage(
    autoencoder_metrics_path: str | os.PathLike,
    history_paths: Sequence[str | os.PathLike],
    dataset: str,
    png_path: str | os.PathLike,
) -> None:
    """Rule ``plot_training_latent``: per-epoch training losses of the auto-encoder and of every
    latent flow and cINN (one line per seed), read from what their training rules recorded."""
    from replicate import plots
    from replicate.experiments.latent.figures import figure_latent_training

    autoencoder = json.loads(Path(autoencoder_metrics_path).read_text())
    runs: dict[str, list[list[float]]] = {}
    for path in history_paths:
        history = json.loads(Path(path).read_text())
        runs.setdefault(history["model"], []).append(history["epoch_loss"])
    plots.use_style()
    plots.save_figure(figure_latent_training(autoencoder["epoch_loss"], runs, dataset), png_path)


def table1_stage(
    eval_paths: Sequence[str | os.PathLike],
    csv_path: str | os.PathLike,
    md_path: str | os.PathLike,
) -> pd.DataFrame:
    """Rule ``table1``: per-seed accuracy JSONs (grouped by their ``dataset``) -> CSV + Markdown.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> for seed, acc in enumerate([0.5, 0.7]):
        ...     text = json.dumps({"dataset": "mnist", "accuracy": acc})
        ...     _ = (d / f"{seed}.json").write_text(text)
        >>> table1_stage([d / "0.json", d / "1.json"], d / "t.csv", d / "t.md").n_seeds.tolist()
        [2]
    """
    accuracies: dict[str, list[float]] = {}
    for path in eval_paths:
        result = json.loads(Path(path).read_text())
        accuracies.setdefault(result["dataset"], []).append(float(result["accuracy"]))
    frame = table1(accuracies)
    write_table(frame, csv_path, md_path, table1_markdown(frame))
    log.info("Table 1:\n%s", frame.to_string(index=False))
    return frame


# -- beyond the paper (workflow/rules/latent_eval.smk) ----------------------------------------
def classifier_stage(
    data_dir: str | os.PathLike,
    dataset: str,
    latent_config: Mapping[str, Any],
    seed: int,
    model_path: str | os.PathLike,
    eval_path: str | os.PathLike,
    device: str = "cpu",
) -> dict[str, Any]:
    """Rule ``train_latent_classifier``: train on real training images, log test accuracy."""
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


def evaluate_model_stage(
    model: str,
    model_path: str | os.PathLike,
    samples_path: str | os.PathLike,
    latents_path: str | os.PathLike,
    classifier_path: str | os.PathLike,
    data_dir: str | os.PathLike,
    dataset: str,
    latent_config: Mapping[str, Any],
    seed: int,
    json_path: str | os.PathLike,
) -> dict[str, Any]:
    """Rule ``evaluate_latent_generator``: every metric of one model, dataset and seed, as JSON.

    ``test_accuracy``: ours through the forward pass, the cINN by Bayes' rule. ``sample_accuracy``
    and ``frechet_distance``: the independent classifier on the generated images (vs their
    requested labels; vs the real test images' features). ``label_probe_accuracy``: a logistic
    regression from z to y, fitted on the training latents' z, scored on the test latents' z; ours'
    z = f_z([u, 0]), the cINN's z = f(u; true label).
    """
    lat = _latents(latents_path)
    u = {s: torch.as_tensor(lat[f"{s}_u"], dtype=torch.float32) for s in ("train", "test")}
    y = {s: torch.as_tensor(lat[f"{s}_y"], dtype=torch.int64) for s in ("train", "test")}
    generator = _loader(model)(model_path, latent_config["flow"])
    if model == "ours":
        scores = _batched(generator.predict, u["test"])
        z = {s: _batched(generator.encode, u[s]) for s in u}
    else:
        scores = _batched(generator.classify, u["test"])
        z = {s: _batched(generator.encode, u[s], y[s]) for s in u}
    probe = probe_accuracy(z["train"].numpy(), lat["train_y"], z["test"].numpy(), lat["test_y"])
    classifier = load_classifier(classifier_path)
    with np.load(samples_path) as f:
        images, labels = f["images"], f["labels"]
    real, _ = load_images(data_dir, dataset, "test", latent_config["n_test"])
    _, real_features = classifier_outputs(classifier, real)
    result = {
        "dataset": dataset,
        "model": model,
        "seed": seed,
        "test_accuracy": accuracy(scores, y["test"]),
        "test_accuracy_method": "forward pass" if model == "ours" else "Bayes' rule",
        **judge_images(classifier, images, labels, real_features),
        "label_probe_accuracy": probe,
        "chance_accuracy": CHANCE_ACCURACY,
        "n_samples": len(images),
        "n_real_test": len(real),
    }
    log.info("%s %s seed %d: %s", dataset, model, seed, json.dumps(result))
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
    real = load_images(data_dir, dataset, "test", latent_config["n_test"])
    n_generated = N_CLASSES * int(latent_config["n_eval_samples_per_class"])
    train_x, train_y = load_images(data_dir, dataset, "train", latent_config["n_train"])
    lat = _latents(latents_path)
    ae = load_autoencoder(autoencoder_path, latent_config["autoencoder"])
    recon = decode_to_uint8(ae, torch.as_tensor(lat["test_u"]))
    train = (train_x[:n_generated], train_y[:n_generated])
    rows = reference_rows(dataset, load_classifier(classifier_path), real, train, recon, lat)
    for row in rows:
        log.info("%s %s: %s", dataset, row["model"], row)
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
    table = latent_metrics_report(records)
    write_table(table, csv_path, md_path, latent_metrics_markdown(table))
    log.info("latent metrics:\n%s", table.to_string(index=False))
    return table


# -- issue 29: joint training (workflow/rules/latent_joint.smk) -------------------------------
def joint_stage(
    data_dir: str | os.PathLike,
    dataset: str,
    latent_config: Mapping[str, Any],
    variant: str,
    seed: int,
    model_path: str | os.PathLike,
    history_path: str | os.PathLike,
    checkpoint_path: str | os.PathLike,
    device: str = "cpu",
) -> dict[str, Any]:
    """Rule ``train_joint_latent``: train the auto-encoder and the flow together (resumably,
    per epoch), save both in one file, and write the per-epoch losses as JSON."""
    images, labels = load_images(data_dir, dataset, "train", latent_config["n_train"])
    settings = latent_config["joint"]["variants"][variant]
    model, summary = train_joint(
        images, labels, latent_config, settings, seed, checkpoint_path, resolve_device(device)
    )
    save_joint(model_path, model.cpu(), latent_config, settings, seed)
    write_json(history_path, {"variant": variant, "dataset": dataset, "seed": seed, **summary})
    discard_resumable(checkpoint_path)  # only now: every output is written
    log.info("trained joint %s on %s, seed %d: %.1f s", variant, dataset, seed, summary["seconds"])
    return summary


def evaluate_joint_stage(
    data_dir: str | os.PathLike,
    dataset: str,
    latent_config: Mapping[str, Any],
    variant: str,
    seed: int,
    model_path: str | os.PathLike,
    classifier_path: str | os.PathLike,
    json_path: str | os.PathLike,
) -> dict[str, Any]:
    """Rule ``evaluate_joint_latent``: every column of the ablation table for one joint model.

    As for the pretrained pipeline: ``test_accuracy`` through the flow's forward pass on the test
    images' codes; ``code_mlp_accuracy`` an MLP trained on the training codes alone
    (:func:`code_classifier_accuracy`); ``reconstruction_mse`` per pixel on the test images;
    ``sample_accuracy`` and ``frechet_distance`` by the judging classifier on
    ``n_eval_samples_per_class`` generated images per class; ``label_probe_accuracy`` the label a
    linear map reads from z; ``cinn_test_accuracy`` the cINN baseline trained on the joint model's
    training codes as the pipeline trains it on the pretrained codes (``latent.cinn``, the same
    seed), classifying the test codes by Bayes' rule: which of the two models reads the code
    better, apart from what the code holds.
    """
    settings = latent_config["joint"]["variants"][variant]
    model = load_joint(model_path, latent_config, settings, seed)
    ae, flow = model.autoencoder, model.flow
    split = {
        s: load_images(data_dir, dataset, s, latent_config[f"n_{s}"]) for s in ("train", "test")
    }
    u = {s: encode_images(ae, split[s][0]) for s in split}
    y = {s: split[s][1] for s in split}
    z = {s: flow.encode(torch.as_tensor(u[s])).numpy() for s in split}
    test = evaluate_latent_flow(flow, u["test"], y["test"], seed=seed)
    cinn, _ = train_latent_cinn(
        u["train"], y["train"], latent_config["flow"], int(latent_config["cinn"]["epochs"]), seed
    )
    cinn_scores = _batched(cinn.classify, torch.as_tensor(u["test"], dtype=torch.float32))
    images, labels = sample_images(flow, ae, int(latent_config["n_eval_samples_per_class"]), seed)
    classifier = load_classifier(classifier_path)
    _, real_features = classifier_outputs(classifier, split["test"][0])
    result = {
        "configuration": variant,
        "dataset": dataset,
        "seed": seed,
        **settings,
        "test_accuracy": test["accuracy"],
        "cinn_test_accuracy": accuracy(cinn_scores, torch.as_tensor(y["test"])),
        "code_mlp_accuracy": code_classifier_accuracy(u["train"], y["train"], u["test"], y["test"]),
        "reconstruction_mse": reconstruction_error(ae, split["test"][0])["mse"],
        **judge_images(classifier, images, labels, real_features),
        "label_probe_accuracy": probe_accuracy(z["train"], y["train"], z["test"], y["test"]),
        "test_nll": test["nll"],
    }
    log.info("%s %s seed %d: %s", dataset, variant, seed, json.dumps(result))
    write_json(json_path, result)
    return result


def ablation_table_stage(
    pretrained: Sequence[Sequence[str | os.PathLike]],
    joint_eval_paths: Sequence[str | os.PathLike],
    csv_path: str | os.PathLike,
    md_path: str | os.PathLike,
) -> pd.DataFrame:
    """Rule ``latent_ablation``: :func:`ablation_table` of the pretrained pipeline's rows
    (``pretrained``: per dataset and seed, the JSONs of the seed's metrics of ours and of the cINN,
    of the references and of the auto-encoder: :func:`pretrained_ablation_row`)
    and of the joint models' evaluations (``joint_eval_paths``), as CSV and Markdown."""
    rows = [
        pretrained_ablation_row(*(json.loads(Path(p).read_text()) for p in paths))
        for paths in pretrained
    ]
    rows += [json.loads(Path(p).read_text()) for p in joint_eval_paths]
    frame, markdown = ablation_table(rows)
    write_table(frame, csv_path, md_path, markdown)
    log.info("latent ablation:\n%s", markdown)
    return frame
