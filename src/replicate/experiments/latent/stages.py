"""The E3 pipeline stages of the paper's experiment (auto-encoder, latent flow, Figures 5.3 and
5.4, Table 1): one call per Snakemake rule (workflow/rules/latent.smk), each reading and writing
files; the maths lives in the sibling modules."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from replicate.data import load_images
from replicate.experiments.latent.autoencoder import encode_images, reconstruction_error
from replicate.experiments.latent.evaluation import (
    DATASET_NAMES,
    PAPER_ACCURACY,
    evaluate_latent_flow,
    figure_image_grid,
    sample_images,
    style_images,
    table1,
)
from replicate.experiments.latent.joint import load_joint, save_joint, train_joint
from replicate.experiments.latent.judges import (
    classifier_outputs,
    code_classifier_accuracy,
    feature_frechet_distance,
    load_classifier,
    probe_accuracy,
)
from replicate.experiments.latent.models import (
    N_CLASSES,
    load_latent_flow,
    save_latent_flow,
)
from replicate.experiments.latent.training import train_latent_flow
from replicate.metrics import accuracy, mean_std_cells
from replicate.runtime import (
    resolve_device,
    use_threads,
    write_json,
    write_npz,
    write_table,
)

__all__ = [
    "ablation_table_stage",
    "autoencoder_stage",
    "encode_stage",
    "evaluate_joint_stage",
    "evaluate_stage",
    "fig5_3_stage",
    "fig5_4_stage",
    "flow_stage",
    "joint_stage",
    "pretrained_ablation_row",
    "reconstruction_figure_stage",
    "samples_stage",
    "table1_stage",
    "training_curves_stage",
]

log = logging.getLogger("replicate")


# -- pipeline stages: one call per Snakemake rule ---------------------------------------------
def autoencoder_stage(
    data_dir: str | os.PathLike,
    dataset: str,
    latent_config: Mapping[str, Any],
    seed: int,
    model_path: str | os.PathLike,
    metrics_path: str | os.PathLike,
    checkpoint_path: str | os.PathLike,
    device: str = "cpu",
    threads: int | None = None,
) -> dict[str, Any]:
    """Rule ``train_autoencoder``: pretrain (resumably), save, log the test reconstruction error."""
    use_threads(threads)
    from replicate.experiments.latent.autoencoder import run_autoencoder_stage
    from replicate.runtime import resolve_device

    train, _ = load_images(data_dir, dataset, "train", latent_config["n_train"])
    test, _ = load_images(data_dir, dataset, "test", latent_config["n_test"])
    return run_autoencoder_stage(
        train,
        test,
        latent_config["autoencoder"],
        seed,
        model_path,
        metrics_path,
        checkpoint_path,
        resolve_device(device),
    )


def encode_stage(
    data_dir: str | os.PathLike,
    dataset: str,
    latent_config: Mapping[str, Any],
    autoencoder_path: str | os.PathLike,
    latents_path: str | os.PathLike,
    device: str = "cpu",
    threads: int | None = None,
) -> None:
    """Rule ``encode_latents``: ``latents.npz`` with ``train_u, train_y, test_u, test_y``."""
    use_threads(threads)
    from replicate.experiments.latent.autoencoder import encode_images, load_autoencoder
    from replicate.runtime import resolve_device

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
    from replicate.experiments.latent.autoencoder import load_autoencoder, to_unit_images
    from replicate.plots import save_figure, use_style
    from replicate.runtime import resolve_device

    dev = resolve_device(device)
    model = load_autoencoder(autoencoder_path, latent_config["autoencoder"], dev)
    images, _ = load_images(data_dir, dataset, "test", latent_config["n_test"])
    images = images[:n_images]
    with torch.no_grad():
        recon = model(to_unit_images(images).to(dev))[:, 0].cpu()
    recon = (recon * 255).round().clamp(0, 255).to(torch.uint8).numpy()
    use_style()
    fig = figure_image_grid(
        np.stack([images, recon]),
        ["original", "reconstruction"],
        f"{DATASET_NAMES.get(dataset, dataset)}: auto-encoder on test images",
    )
    save_figure(fig, png_path)


def flow_stage(
    latents_path: str | os.PathLike,
    latent_config: Mapping[str, Any],
    seed: int,
    model_path: str | os.PathLike,
    checkpoint_path: str | os.PathLike,
    device: str = "cpu",
    threads: int | None = None,
    history_path: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Rule ``train_latent_flow``: train one seed's flow on the training latents and save it;
    its per-epoch training NLL and timings go to ``history_path`` (JSON) when given."""
    use_threads(threads)
    from replicate.runtime import resolve_device

    with np.load(latents_path) as f:
        train_u, train_y = f["train_u"], f["train_y"]
    model, summary = train_latent_flow(
        train_u, train_y, latent_config["flow"], seed, checkpoint_path, resolve_device(device)
    )
    save_latent_flow(model_path, model, latent_config["flow"], train_u.shape[1], seed)
    if history_path is not None:
        write_json(history_path, {"model": "ours", "seed": seed, **summary})
    log.info("trained latent flow seed %d in %.1f s", seed, summary["seconds"])
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
    from replicate.runtime import resolve_device

    model = load_latent_flow(flow_path, latent_config["flow"], resolve_device(device))
    with np.load(latents_path) as f:
        test = evaluate_latent_flow(model, f["test_u"], f["test_y"], seed=seed)
        train = evaluate_latent_flow(model, f["train_u"], f["train_y"], seed=seed)
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
    log.info(
        "%s seed %d: test accuracy %.4f (paper %s)",
        dataset,
        seed,
        test["accuracy"],
        PAPER_ACCURACY.get(dataset),
    )
    write_json(json_path, result)
    return result


def samples_stage(
    flow_path: str | os.PathLike,
    autoencoder_path: str | os.PathLike,
    latent_config: Mapping[str, Any],
    seed: int,
    samples_path: str | os.PathLike,
    device: str = "cpu",
) -> None:
    """Rule ``sample_latent_flow``: ``n_eval_samples_per_class`` images per class, as npz."""
    from replicate.experiments.latent.autoencoder import load_autoencoder
    from replicate.runtime import resolve_device

    dev = resolve_device(device)
    flow = load_latent_flow(flow_path, latent_config["flow"], dev)
    ae = load_autoencoder(autoencoder_path, latent_config["autoencoder"], dev)
    images, labels = sample_images(flow, ae, int(latent_config["n_eval_samples_per_class"]), seed)
    write_npz(samples_path, images=images, labels=labels)
    log.info("wrote %d generated images (seed %d) to %s", len(images), seed, samples_path)


def fig5_3_stage(
    samples_path: str | os.PathLike, dataset: str, n_per_class: int, png_path: str | os.PathLike
) -> None:
    """Rule ``plot_fig5_3``: 10 rows (one per class) of the first ``n_per_class`` samples."""
    from replicate.plots import save_figure, use_style

    with np.load(samples_path) as f:
        images, labels = f["images"], f["labels"]
    grid = np.stack([images[labels == k][:n_per_class] for k in range(N_CLASSES)])
    if grid.shape[1] < n_per_class:
        raise ValueError(f"{samples_path} holds fewer than {n_per_class} samples per class")
    use_style()
    fig = figure_image_grid(
        grid,
        [str(k) for k in range(N_CLASSES)],
        f"{DATASET_NAMES.get(dataset, dataset)}: samples conditioned on the label (row)",
    )
    save_figure(fig, png_path)


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
    from replicate.experiments.latent.autoencoder import load_autoencoder
    from replicate.plots import save_figure, use_style
    from replicate.runtime import resolve_device

    dev = resolve_device(device)
    flow = load_latent_flow(flow_path, latent_config["flow"], dev)
    ae = load_autoencoder(autoencoder_path, latent_config["autoencoder"], dev)
    grid, z = style_images(flow, ae, int(latent_config["n_style_rows"]), seed)
    write_npz(images_path, images=grid, z=z)
    use_style()
    fig = figure_image_grid(
        grid,
        [f"z{r + 1}" for r in range(len(grid))],
        f"{DATASET_NAMES.get(dataset, dataset)}: fixed z per row, label 0-9 along the row",
        col_labels=[str(k) for k in range(N_CLASSES)],
    )
    save_figure(fig, png_path)


def training_curves_stage(
    autoencoder_metrics_path: str | os.PathLike,
    history_paths: Sequence[str | os.PathLike],
    dataset: str,
    png_path: str | os.PathLike,
) -> None:
    """Rule ``plot_training_latent``: per-epoch training losses of the auto-encoder and of every
    latent flow and cINN (one line per seed), read from what their training rules recorded."""
    from replicate.plots import CurvePanel, figure_training_curves, save_figure, use_style

    autoencoder = json.loads(Path(autoencoder_metrics_path).read_text())
    runs: dict[str, list[list[float]]] = {}
    for path in history_paths:
        history = json.loads(Path(path).read_text())
        runs.setdefault(history["model"], []).append(history["epoch_loss"])

    def epochs(losses: Sequence[float]) -> np.ndarray:
        return np.arange(1, len(losses) + 1)

    panels = [
        CurvePanel(
            "auto-encoder (seeds[0])",
            [epochs(autoencoder["epoch_loss"])],
            {"reconstruction MSE / pixel": [np.asarray(autoencoder["epoch_loss"])]},
            log_scale=True,
        )
    ]
    for model, title in (("ours", "ours (latent flow)"), ("cinn", "cINN")):
        if model in runs:
            losses = runs[model]
            panels.append(
                CurvePanel(
                    title, [epochs(v) for v in losses], {"NLL": list(map(np.asarray, losses))}
                )
            )
    use_style()
    fig = figure_training_curves(
        panels,
        title=f"{DATASET_NAMES.get(dataset, dataset)}: training losses per epoch, "
        f"{max(len(v) for v in runs.values()) if runs else 0} seed(s)",
        xlabel="epoch",
    )
    save_figure(fig, png_path)


def table1_stage(
    eval_paths: Sequence[str | os.PathLike],
    csv_path: str | os.PathLike,
    md_path: str | os.PathLike,
) -> pd.DataFrame:
    """Rule ``table1``: per-seed accuracy JSONs (grouped by their ``dataset``) -> CSV + Markdown.

    Example:
        >>> import json, tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> for seed, acc in enumerate([0.5, 0.7]):
        ...     text = json.dumps({"dataset": "mnist", "accuracy": acc})
        ...     _ = (d / f"{seed}.json").write_text(text)
        >>> table1_stage([d / "0.json", d / "1.json"], d / "t.csv", d / "t.md").n_seeds.tolist()
        [2]
    """
    import json

    accuracies: dict[str, list[float]] = {}
    for path in eval_paths:
        result = json.loads(Path(path).read_text())
        accuracies.setdefault(result["dataset"], []).append(float(result["accuracy"]))
    frame = table1(accuracies)
    shown = pd.DataFrame(
        {
            "dataset": frame["dataset"],
            # "mean ± std" as in every table here; one seed shows its accuracy alone, not "nan".
            "test accuracy (mean ± std over seeds)": mean_std_cells(
                frame["accuracy_mean"], frame["accuracy_std"], digits=4
            ),
            "seeds": frame["n_seeds"],
            "paper": mean_std_cells(frame["paper_accuracy"], [float("nan")] * len(frame), 3),
        }
    )
    write_table(frame, csv_path, md_path, shown.to_markdown(index=False, disable_numparse=True))
    log.info("Table 1:\n%s", frame.to_string(index=False))
    return frame


# -- issue 29: joint training of the auto-encoder and the flow, next to the pretrained pipeline
ABLATION_METRICS = (
    "test_accuracy",
    "code_mlp_accuracy",
    "reconstruction_mse",
    "sample_accuracy",
    "frechet_distance",
    "label_probe_accuracy",
)


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
    log.info(
        "trained joint %s on %s, seed %d, in %.1f s", variant, dataset, seed, summary["seconds"]
    )
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
    linear map reads from z.
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
    images, labels = sample_images(flow, ae, int(latent_config["n_eval_samples_per_class"]), seed)
    classifier = load_classifier(classifier_path)
    logits, features = classifier_outputs(classifier, images)
    _, real_features = classifier_outputs(classifier, split["test"][0])
    result = {
        "configuration": variant,
        "dataset": dataset,
        "seed": seed,
        **settings,
        "test_accuracy": test["accuracy"],
        "code_mlp_accuracy": code_classifier_accuracy(u["train"], y["train"], u["test"], y["test"]),
        "reconstruction_mse": reconstruction_error(ae, split["test"][0])["mse"],
        "sample_accuracy": accuracy(logits, labels),
        "frechet_distance": feature_frechet_distance(features, real_features),
        "label_probe_accuracy": probe_accuracy(z["train"], y["train"], z["test"], y["test"]),
        "test_nll": test["nll"],
    }
    log.info("%s %s seed %d: %s", dataset, variant, seed, json.dumps(result))
    write_json(json_path, result)
    return result


def pretrained_ablation_row(
    metrics_path: str | os.PathLike,
    references_path: str | os.PathLike,
    autoencoder_metrics_path: str | os.PathLike,
) -> dict[str, Any]:
    """The ablation table's row of the pretrained pipeline for one dataset and seed, read from
    its outputs: the seed's metrics, the references' MLP on the code, the auto-encoder's test
    reconstruction error."""
    ours = json.loads(Path(metrics_path).read_text())
    references = json.loads(Path(references_path).read_text())["rows"]
    mlp = next(r for r in references if r["model"] == "MLP on the auto-encoder code")
    autoencoder = json.loads(Path(autoencoder_metrics_path).read_text())
    return {
        "configuration": "pretrained",
        "dataset": ours["dataset"],
        "seed": ours["seed"],
        "test_accuracy": ours["test_accuracy"],
        "code_mlp_accuracy": mlp["test_accuracy"],
        "reconstruction_mse": autoencoder["test"]["mse"],
        "sample_accuracy": ours["sample_accuracy"],
        "frechet_distance": ours["frechet_distance"],
        "label_probe_accuracy": ours["label_probe_accuracy"],
    }


def ablation_table_stage(
    pretrained: Sequence[tuple[str | os.PathLike, str | os.PathLike, str | os.PathLike]],
    joint_eval_paths: Sequence[str | os.PathLike],
    csv_path: str | os.PathLike,
    md_path: str | os.PathLike,
) -> pd.DataFrame:
    """Rule ``latent_ablation``: one row per configuration, dataset and seed (CSV) and their
    mean ± std over seeds next to the paper's accuracy (Markdown).

    ``pretrained`` holds, per dataset and seed, the three files of
    :func:`pretrained_ablation_row`; ``joint_eval_paths`` the JSONs of
    :func:`evaluate_joint_stage`.
    """
    rows = [pretrained_ablation_row(*paths) for paths in pretrained]
    rows += [json.loads(Path(p).read_text()) for p in joint_eval_paths]
    frame = pd.DataFrame(rows)[["configuration", "dataset", "seed", *ABLATION_METRICS]]
    # Each dataset's rows together, the pretrained pipeline first (stable: configurations and
    # seeds keep the order given).
    order = {d: i for i, d in enumerate(dict.fromkeys(frame["dataset"]))}
    frame = frame.sort_values("dataset", key=lambda d: d.map(order), kind="stable")
    frame = frame.reset_index(drop=True)
    grouped = frame.groupby(["dataset", "configuration"], sort=False)[list(ABLATION_METRICS)]
    mean, std = grouped.mean(), grouped.std()
    shown = mean.index.to_frame(index=False)
    shown["seeds"] = grouped.size().to_numpy()
    for metric in ABLATION_METRICS:
        digits = 1 if metric == "frechet_distance" else 4
        shown[metric] = mean_std_cells(mean[metric], std[metric], digits=digits)
    shown["paper (Table 1)"] = [PAPER_ACCURACY.get(d) for d in shown["dataset"]]
    write_table(frame, csv_path, md_path, shown.to_markdown(index=False, disable_numparse=True))
    log.info("latent ablation:\n%s", shown.to_string(index=False))
    return frame
