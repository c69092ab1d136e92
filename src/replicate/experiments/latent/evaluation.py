"""Scoring E3 (SPEC E3; Figures 5.3, 5.4, Table 1): test accuracy of the forward pass next to the
paper's, generated images, and the table of the judges' metrics
(:mod:`replicate.experiments.latent.judges`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from replicate.experiments.latent.autoencoder import AutoEncoder
from replicate.experiments.latent.judges import (
    ImageClassifier,
    classifier_outputs,
    code_classifier_accuracy,
    judge_images,
    probe_accuracy,
)
from replicate.experiments.latent.models import (
    N_CLASSES,
    LatentCINN,
    LatentFlow,
)
from replicate.metrics import accuracy, mean_std_cells, mean_std_table, summarise

__all__ = [
    "CHANCE_ACCURACY",
    "PAPER_ACCURACY",
    "TABLE_METRICS",
    "decode_to_uint8",
    "evaluate_latent_flow",
    "ABLATION_METRICS",
    "ablation_table",
    "pretrained_ablation_row",
    "latent_metrics_markdown",
    "latent_metrics_report",
    "reference_rows",
    "latent_metrics_table",
    "sample_images",
    "style_images",
    "table1",
    "table1_markdown",
]


# Table 1 of the paper: test accuracy of the forward pass.
PAPER_ACCURACY = {"mnist": 0.984, "fashion_mnist": 0.901}


DATASET_NAMES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}


@torch.no_grad()
def evaluate_latent_flow(
    model: LatentFlow,
    test_u: np.ndarray,
    test_y: np.ndarray,
    batch_size: int = 2000,
    seed: int = 0,
) -> dict[str, float]:
    """Test accuracy through the forward pass, and the mean test NLL of the padded latents.

    The NLL draws the padding noise of training; it comes from ``seed`` (the global generator is
    left as it was), so the same model gives the same numbers on every run.

    Example:
        >>> import numpy as np
        >>> flow = LatentFlow(latent_dim=3, n_blocks=1, hidden=4)
        >>> r = evaluate_latent_flow(flow, np.zeros((4, 3), np.float32), np.arange(4))
        >>> sorted(r)
        ['accuracy', 'n_test', 'nll']
    """
    device = model.u_mean.device
    u = torch.as_tensor(np.asarray(test_u, dtype=np.float32), device=device)
    y = torch.as_tensor(np.asarray(test_y, dtype=np.int64), device=device)
    scores, nll = [], []
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        for start in range(0, len(u), batch_size):
            ub, yb = u[start : start + batch_size], y[start : start + batch_size]
            scores.append(model.predict(ub).cpu())
            nll.append(model.nll(ub, yb).cpu())
    return {
        "accuracy": accuracy(torch.cat(scores).numpy(), y.cpu().numpy()),
        "nll": float(torch.cat(nll).mean()),
        "n_test": len(u),
    }


@torch.no_grad()
def decode_to_uint8(autoencoder: AutoEncoder, u: Tensor, batch_size: int = 1000) -> np.ndarray:
    """Decode raw latents (N, d) to uint8 images (N, 28, 28).

    Example:
        >>> import torch
        >>> decode_to_uint8(AutoEncoder(3).eval(), torch.zeros(2, 3)).dtype
        dtype('uint8')
    """
    autoencoder.eval()
    device = next(autoencoder.parameters()).device
    out = []
    for start in range(0, len(u), batch_size):
        images = autoencoder.decode(u[start : start + batch_size].to(device))
        out.append((images[:, 0] * 255.0).round().clamp(0, 255).to(torch.uint8).cpu())
    return torch.cat(out).numpy()


@torch.no_grad()
def sample_images(
    flow: LatentFlow | LatentCINN, autoencoder: AutoEncoder, n_per_class: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``n_per_class`` generated images of every class, class-major: rows of class 0 first.

    Returns uint8 images (10 * n_per_class, 28, 28) and int64 labels.

    Example:
        >>> images, labels = sample_images(LatentFlow(3, n_blocks=1, hidden=4),
        ...                                AutoEncoder(3), n_per_class=2, seed=0)
        >>> images.shape, labels.tolist()[:4]
        ((20, 28, 28), [0, 0, 1, 1])
    """
    torch.manual_seed(seed)
    labels = torch.arange(flow.n_classes).repeat_interleave(n_per_class)
    u = flow.sample(labels)
    return decode_to_uint8(autoencoder, u), labels.numpy().astype(np.int64)


@torch.no_grad()
def style_images(
    flow: LatentFlow, autoencoder: AutoEncoder, n_rows: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Figure 5.4's grid: each of ``n_rows`` rows shares one z, the label runs over the classes.

    Returns uint8 images (n_rows, n_classes, 28, 28) and the z used (n_rows, latent_dim).

    Example:
        >>> grid, z = style_images(LatentFlow(3, n_blocks=1, hidden=4), AutoEncoder(3), 2, 0)
        >>> grid.shape, z.shape
        ((2, 10, 28, 28), (2, 3))
    """
    torch.manual_seed(seed)
    k = flow.n_classes
    z = torch.randn(n_rows, flow.latent_dim, device=flow.u_mean.device)
    labels = torch.arange(k).repeat(n_rows)  # row-major: row r is labels 0..k-1
    u = flow.sample(labels, z=z.repeat_interleave(k, dim=0))
    images = decode_to_uint8(autoencoder, u).reshape(n_rows, k, 28, 28)
    return images, z.cpu().numpy()


def table1(evaluations: Mapping[str, Sequence[float]]) -> pd.DataFrame:
    """Table 1 from per-seed test accuracies: ``{dataset: [accuracy per seed]}``.

    Columns ``dataset, accuracy_mean, accuracy_std, n_seeds, paper_accuracy``; mean and sample
    std over seeds as every table here computes them (:func:`replicate.metrics.summarise`: the std
    of one seed is NaN, undefined).

    Example:
        >>> table1({"mnist": [0.98, 0.99]}).round(4).to_dict("records")[0]["accuracy_mean"]
        0.985
    """
    empty = [dataset for dataset, accuracies in evaluations.items() if len(accuracies) == 0]
    if empty:
        raise ValueError(f"no accuracies for {', '.join(empty)}")
    frame = pd.DataFrame(
        [
            {"dataset": dataset, "accuracy": float(a)}
            for dataset, accuracies in evaluations.items()
            for a in accuracies
        ]
    )
    table = summarise(frame, ["dataset"], ["accuracy"]).drop(columns=["n_diverged"])
    table["paper_accuracy"] = [PAPER_ACCURACY.get(d, float("nan")) for d in table["dataset"]]
    return table


def table1_markdown(frame: pd.DataFrame) -> str:
    """:func:`table1` as Markdown: ``mean ± std`` over seeds (one seed: its accuracy alone),
    the number of seeds and the paper's accuracy."""
    shown = pd.DataFrame(
        {
            "dataset": frame["dataset"],
            "test accuracy (mean ± std over seeds)": mean_std_cells(
                frame["accuracy_mean"], frame["accuracy_std"], digits=4
            ),
            "seeds": frame["n_seeds"],
            "paper": mean_std_cells(frame["paper_accuracy"], [float("nan")] * len(frame), 3),
        }
    )
    return shown.to_markdown(index=False, disable_numparse=True)


CHANCE_ACCURACY = 1.0 / N_CLASSES


MODEL_NAMES = {"ours": "ours (forward pass)", "cinn": "cINN (Bayes' rule)"}


# -- the metrics table ------------------------------------------------------------------------
TABLE_METRICS = ["test_accuracy", "sample_accuracy", "frechet_distance", "label_probe_accuracy"]


def latent_metrics_table(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Mean and sample std (ddof=1) over seeds of every metric, one row per (dataset, model).

    Each record has ``dataset``, ``model`` and the metrics of :data:`TABLE_METRICS` (NaN where a
    model has none, e.g. the reference rows have no test accuracy). Columns: ``dataset, model,
    <metric>_mean, <metric>_std ..., chance_accuracy, n_seeds``.

    Example:
        >>> recs = [{"dataset": "mnist", "model": "ours", "test_accuracy": a,
        ...          "sample_accuracy": 0.9, "frechet_distance": 1.0,
        ...          "label_probe_accuracy": 0.1} for a in (0.97, 0.99)]
        >>> row = latent_metrics_table(recs).round(4).to_dict("records")[0]
        >>> row["test_accuracy_mean"], row["test_accuracy_std"], row["n_seeds"]
        (0.98, 0.0141, 2)
    """

    if not records:
        raise ValueError("no records for the latent metrics table")
    frame = pd.DataFrame([dict(r) for r in records])
    for column in TABLE_METRICS:
        if column not in frame:
            frame[column] = np.nan
    table = summarise(frame, ["dataset", "model"], TABLE_METRICS)
    table = table.drop(columns=["n_diverged"])
    table.insert(len(table.columns) - 1, "chance_accuracy", CHANCE_ACCURACY)
    return table


def latent_metrics_report(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """:func:`latent_metrics_table` as the pipeline shows it: per dataset (in the order of the
    records) ours, then the cINN, then the reference rows, each model by its shown name."""
    table = latent_metrics_table(records)
    datasets = {d: i for i, d in enumerate(dict.fromkeys(r["dataset"] for r in records))}
    table["_dataset"] = table["dataset"].map(datasets)
    table["_model"] = table["model"].map(
        lambda m: list(MODEL_NAMES).index(m) if m in MODEL_NAMES else len(MODEL_NAMES)
    )
    table = table.sort_values(["_dataset", "_model"], kind="stable")
    table = table.drop(columns=["_dataset", "_model"])
    table["model"] = table["model"].map(lambda m: MODEL_NAMES.get(m, f"reference: {m}"))
    return table.reset_index(drop=True)


def reference_rows(
    dataset: str,
    classifier: ImageClassifier,
    real: tuple[np.ndarray, np.ndarray],
    train: tuple[np.ndarray, np.ndarray],
    reconstructions: np.ndarray,
    latents: Mapping[str, np.ndarray],
) -> list[dict[str, Any]]:
    """The metrics table's reference rows for non-generated images (see
    :func:`replicate.experiments.latent.stages.reference_stage`): the real test images
    (``real``: images, labels), as many real training images as a model generates (``train``),
    the auto-encoder's ``reconstructions`` of the test images, and the MLP on the code
    (``latents``: ``train_u, train_y, test_u, test_y``)."""
    _, real_features = classifier_outputs(classifier, real[0])
    lat = latents

    def row(model: str, n_samples: int, **metrics: float) -> dict[str, Any]:
        """One reference row: the metrics it has, NaN for the others."""
        nan = dict.fromkeys(TABLE_METRICS, float("nan"))
        return {"dataset": dataset, "model": model, "seed": None, **nan, **metrics,
                "n_samples": n_samples}  # fmt: skip

    code_mlp = code_classifier_accuracy(
        lat["train_u"], lat["train_y"], lat["test_u"], lat["test_y"]
    )
    u_probe = probe_accuracy(lat["train_u"], lat["train_y"], lat["test_u"], lat["test_y"])
    real_judged = judge_images(classifier, *real, real_features)
    return [
        # The classifier's own test accuracy: the ceiling of sample_accuracy. The distance of the
        # test set to itself is 0 by definition, so it is left out.
        row("real test images", len(real[0]), sample_accuracy=real_judged["sample_accuracy"]),
        row("MLP on the auto-encoder code", len(lat["test_u"]), test_accuracy=code_mlp),
        row("real train images", len(train[0]), **judge_images(classifier, *train, real_features)),
        row(
            "auto-encoder reconstructions",
            len(reconstructions),
            **judge_images(classifier, reconstructions, lat["test_y"], real_features),
            label_probe_accuracy=u_probe,
        ),
    ]


def latent_metrics_markdown(table: pd.DataFrame) -> str:
    """The table with ``mean +- std`` cells (``-`` where a model has no such number)."""
    shown = table[["dataset", "model"]].copy()
    for metric in TABLE_METRICS:
        mean, std = table[f"{metric}_mean"], table[f"{metric}_std"]
        digits = 2 if metric == "frechet_distance" else 4
        shown[metric] = mean_std_cells(mean, std, digits, missing="-")
    shown["chance_accuracy"] = table["chance_accuracy"]
    shown["n_seeds"] = table["n_seeds"]
    return shown.to_markdown(index=False, floatfmt=".2f") + "\n"


# -- issue 29: the pretrained pipeline next to joint training ---------------------------------
ABLATION_METRICS = (
    "test_accuracy",
    "cinn_test_accuracy",
    "code_mlp_accuracy",
    "reconstruction_mse",
    "sample_accuracy",
    "frechet_distance",
    "label_probe_accuracy",
)


def pretrained_ablation_row(
    ours: Mapping[str, Any],
    cinn: Mapping[str, Any],
    references: Mapping[str, Any],
    autoencoder: Mapping[str, Any],
) -> dict[str, Any]:
    """The ablation table's row of the pretrained pipeline for one dataset and seed, from its
    outputs: the seed's metrics of ours and of the cINN baseline, the references' MLP on the code
    and the auto-encoder's test reconstruction error.

    Example:
        >>> ours = {"dataset": "mnist", "seed": 0, "test_accuracy": 0.98,
        ...         "sample_accuracy": 0.9, "frechet_distance": 2.0, "label_probe_accuracy": 0.2}
        >>> refs = {"rows": [{"model": "MLP on the auto-encoder code", "test_accuracy": 0.983}]}
        >>> cinn, ae = {"test_accuracy": 0.97}, {"test": {"mse": 0.01}}
        >>> row = pretrained_ablation_row(ours, cinn, refs, ae)
        >>> row["code_mlp_accuracy"], row["cinn_test_accuracy"]
        (0.983, 0.97)
    """
    mlp = next(r for r in references["rows"] if r["model"] == "MLP on the auto-encoder code")
    return {
        "configuration": "pretrained",
        "dataset": ours["dataset"],
        "seed": ours["seed"],
        "test_accuracy": ours["test_accuracy"],
        "cinn_test_accuracy": cinn["test_accuracy"],
        "code_mlp_accuracy": mlp["test_accuracy"],
        "reconstruction_mse": autoencoder["test"]["mse"],
        "sample_accuracy": ours["sample_accuracy"],
        "frechet_distance": ours["frechet_distance"],
        "label_probe_accuracy": ours["label_probe_accuracy"],
    }


def ablation_table(rows: Sequence[Mapping[str, Any]]) -> tuple[pd.DataFrame, str]:
    """One row per configuration, dataset and seed (the frame, for CSV), and their mean ± std
    over seeds next to the paper's accuracy (Markdown). Each dataset's rows stay together, in the
    order given (the pretrained pipeline first).

    Example:
        >>> rows = [{"configuration": "pretrained", "dataset": "mnist", "seed": s,
        ...          **dict.fromkeys(ABLATION_METRICS, 0.5 + s / 10)} for s in (0, 1)]
        >>> frame, markdown = ablation_table(rows)
        >>> len(frame), "0.5500 ± 0.0707" in markdown
        (2, True)
    """
    frame = pd.DataFrame(rows)[["configuration", "dataset", "seed", *ABLATION_METRICS]]
    order = {d: i for i, d in enumerate(dict.fromkeys(frame["dataset"]))}
    frame = frame.sort_values("dataset", key=lambda d: d.map(order), kind="stable")
    frame = frame.reset_index(drop=True)
    digits = {m: 1 if m == "frechet_distance" else 4 for m in ABLATION_METRICS}
    shown = mean_std_table(frame, ["dataset", "configuration"], ABLATION_METRICS, digits)
    shown = shown[["dataset", "configuration", "seeds", *ABLATION_METRICS]]
    shown["paper (Table 1)"] = [PAPER_ACCURACY.get(d) for d in shown["dataset"]]
    return frame, shown.to_markdown(index=False, disable_numparse=True)
