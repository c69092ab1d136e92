"""Beyond the paper for E3: an independent judge of generated images, the cINN baseline on the same
latents, and how much label information the flow's dummy variable z still carries.

- :class:`ImageClassifier`: a small CNN trained on the real training images. It judges generated
  samples: (a) the share it labels as the class they were generated for, and (b) a Frechet distance
  between its penultimate-layer features of generated and real test images
  (:func:`feature_frechet_distance`). Inception weights cannot be downloaded here, so this distance
  lives in another feature space and is NOT comparable to published FID numbers.
- :class:`LatentCINN`: the cINN baseline (Ardizzone et al. 2019) on the same latents with the same
  flow size, label as a one-hot condition of every coupling subnet, classifying by Bayes' rule.
- :func:`probe_accuracy`: a multinomial logistic regression (a linear probe) predicting y from z;
  the paper's Figure 5.4 claims z is independent of y, which puts the probe at chance (0.10).

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> a, b = rng.normal(size=(500, 3)), rng.normal(size=(500, 3)) + [1.0, 0.0, 0.0]
    >>> 0.8 < feature_frechet_distance(a, b) < 1.3  # about ||mu_a - mu_b||^2 = 1
    True
"""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.linalg
import torch
from torch import Tensor, nn

from replicate.autoencoder import to_unit_images
from replicate.cinn import ConditionalINN
from replicate.data import load_images
from replicate.latent import (
    N_CLASSES,
    LatentModel,
    load_latent_model,
    network_kwargs,
    save_latent_model,
)
from replicate.runtime import (
    load_checkpoint,
    save_checkpoint,
    use_threads,
    write_json,
    write_npz,
    write_table,
)
from replicate.training import EpochBatches, fit, make_optimizer

__all__ = [
    "CHANCE_ACCURACY",
    "ImageClassifier",
    "LatentCINN",
    "bayes_log_posterior",
    "classifier_outputs",
    "code_classifier_accuracy",
    "feature_frechet_distance",
    "fit_logistic_regression",
    "frechet_distance",
    "latent_metrics_table",
    "load_classifier",
    "load_latent_cinn",
    "probe_accuracy",
    "save_classifier",
    "save_latent_cinn",
    "train_classifier",
    "train_latent_cinn",
]

log = logging.getLogger("replicate")

CHANCE_ACCURACY = 1.0 / N_CLASSES
FEATURE_DIM = 128
MODEL_NAMES = {"ours": "ours (forward pass)", "cinn": "cINN (Bayes' rule)"}


# -- the independent classifier ---------------------------------------------------------------
class ImageClassifier(nn.Module):
    """A small CNN for 28x28 grey images in [0, 1]: two conv blocks, a 128-unit feature layer.

    Deliberately unlike the auto-encoder (max-pooling, no batch norm) and trained on real images
    only, so it judges generated images without sharing the generator's biases.

    Example:
        >>> clf = ImageClassifier()
        >>> x = torch.rand(3, 1, 28, 28)
        >>> clf(x).shape, clf.features(x).shape
        (torch.Size([3, 10]), torch.Size([3, 128]))
    """

    def __init__(self, n_classes: int = N_CLASSES, feature_dim: int = FEATURE_DIM) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 28 -> 14
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 14 -> 7
            nn.Flatten(),
            nn.Linear(64 * 7 * 7, feature_dim),
            nn.ReLU(),
        )
        self.head = nn.Linear(feature_dim, n_classes)

    def features(self, images: Tensor) -> Tensor:
        """Penultimate-layer features (N, 128) of images (N, 1, 28, 28): the Frechet space."""
        if images.ndim != 4 or tuple(images.shape[1:]) != (1, 28, 28):
            raise ValueError(f"images must have shape (N, 1, 28, 28), got {tuple(images.shape)}")
        return self.body(images)

    def forward(self, images: Tensor) -> Tensor:
        """Class logits (N, n_classes)."""
        return self.head(self.features(images))


def _as_uint8_images(images: np.ndarray | Tensor) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(
            f"images must be uint8 of shape (N, 28, 28), got {images.dtype} {images.shape}"
        )
    return images


def train_classifier(
    images: np.ndarray,
    labels: np.ndarray,
    config: Mapping[str, Any],
    seed: int,
    device: str | torch.device = "cpu",
    progress_every: int = 100,
) -> tuple[ImageClassifier, dict[str, Any]]:
    """Train :class:`ImageClassifier` by cross-entropy with Adam for ``config["epochs"]`` epochs.

    Each epoch's shuffling comes from ``(seed, epoch)`` alone, so the run is reproducible.

    Args:
        images, labels: uint8 (N, 28, 28) real training images and int labels (N,).
        config: the ``latent.classifier`` section (``epochs``, ``batch_size``, ``lr``).
        seed: seeds the initialisation and the shuffling.
        device: where to train.
        progress_every: a progress line every this many iterations (0: none).

    Example:
        >>> import numpy as np
        >>> imgs = np.zeros((8, 28, 28), np.uint8); imgs[4:] = 255
        >>> cfg = {"epochs": 3, "batch_size": 8, "lr": 1e-2}
        >>> _, summary = train_classifier(imgs, np.repeat([0, 1], 4), cfg, 0, progress_every=0)
        >>> len(summary["epoch_loss"])
        3
    """
    device = torch.device(device)
    x = to_unit_images(_as_uint8_images(images)).to(device)
    y = torch.as_tensor(np.asarray(labels, dtype=np.int64)).to(device)
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"images ({len(x)}) and labels ({len(y)}) disagree or are empty")
    epochs = int(config["epochs"])
    batches = EpochBatches(len(x), int(config["batch_size"]), seed, device=device)
    torch.manual_seed(seed)
    model = ImageClassifier().to(device)
    optimizer = make_optimizer(model.parameters(), lr=float(config["lr"]))
    loss_fn = nn.CrossEntropyLoss()

    def step(i: int) -> dict[str, Tensor]:
        idx = batches(i)
        return {"loss": loss_fn(model(x[idx]), y[idx])}

    model.train()
    result = fit(
        step,
        optimizer,
        epochs * batches.per_epoch,
        progress_every=progress_every,
        what="classifier iteration",
        segment=batches.per_epoch,
        segment_name="classifier epoch",
        seed=seed,
    )
    summary = {
        "epoch_loss": result.segment_means(batches.per_epoch),
        "seconds": result.seconds,
        "seconds_per_iteration": result.seconds_per_iteration,
        "n_train": len(x),
    }
    return model.eval(), summary


@torch.no_grad()
def classifier_outputs(
    model: ImageClassifier, images: np.ndarray, batch_size: int = 1000
) -> tuple[np.ndarray, np.ndarray]:
    """Logits (N, 10) and penultimate features (N, 128) of uint8 images, eval mode, in batches.

    Example:
        >>> logits, feats = classifier_outputs(ImageClassifier(), np.zeros((3, 28, 28), np.uint8))
        >>> logits.shape, feats.shape
        ((3, 10), (3, 128))
    """
    images = _as_uint8_images(images)
    model.eval()
    device = next(model.parameters()).device
    logits, feats = [], []
    for start in range(0, len(images), batch_size):
        h = model.features(to_unit_images(images[start : start + batch_size]).to(device))
        feats.append(h.cpu())
        logits.append(model.head(h).cpu())
    return torch.cat(logits).numpy(), torch.cat(feats).double().numpy()


def _classifier_metadata() -> dict[str, Any]:
    return {"model": "image_classifier", "n_classes": N_CLASSES, "feature_dim": FEATURE_DIM}


def save_classifier(path: str | os.PathLike, model: ImageClassifier) -> None:
    """Save the classifier's weights as safetensors."""
    save_checkpoint(path, model.state_dict(), _classifier_metadata())


def load_classifier(path: str | os.PathLike, device: str | torch.device = "cpu") -> ImageClassifier:
    """Load a classifier saved by :func:`save_classifier` (eval mode).

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "clf.safetensors"
        >>> save_classifier(path, ImageClassifier())
        >>> load_classifier(path).training
        False
    """
    model = ImageClassifier()
    model.load_state_dict(load_checkpoint(path, _classifier_metadata(), device))
    return model.to(device).eval()


# -- Frechet distance -------------------------------------------------------------------------
def frechet_distance(
    mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray, offset: float = 1e-6
) -> float:
    """Frechet (Wasserstein-2 squared) distance between N(mu1, cov1) and N(mu2, cov2).

    ``||mu1 - mu2||^2 + Tr(cov1 + cov2 - 2 (cov1 cov2)^(1/2))``, the FID formula. When the
    product's square root is not finite (near-singular covariances) ``offset * I`` is added to
    both, as pytorch-fid does; a tiny imaginary part from rounding is dropped.

    Example:
        >>> frechet_distance(np.zeros(2), np.eye(2), np.ones(2), 4 * np.eye(2))  # 2 + 2 * 1
        4.0
    """
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    cov1, cov2 = np.atleast_2d(cov1).astype(np.float64), np.atleast_2d(cov2).astype(np.float64)
    if mu1.shape != mu2.shape or cov1.shape != cov2.shape or cov1.shape != (len(mu1),) * 2:
        raise ValueError(
            f"shapes disagree: mu {mu1.shape} {mu2.shape}, cov {cov1.shape} {cov2.shape}"
        )
    with warnings.catch_warnings():
        # ReLU features have dead units, so the covariances are singular and scipy warns; the
        # trace of the root stays accurate there (tests check it against the symmetric form
        # Tr (C1^1/2 C2 C1^1/2)^1/2 on singular covariances), so the warning is only noise.
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        covmean = scipy.linalg.sqrtm(cov1 @ cov2)
        if not np.isfinite(covmean).all():
            eye = offset * np.eye(len(mu1))
            covmean = scipy.linalg.sqrtm((cov1 + eye) @ (cov2 + eye))
    if np.iscomplexobj(covmean):
        # Only rounding may make it complex: the eigenvalues of cov1 cov2 are real and >= 0.
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3 * max(1.0, np.trace(cov1))):
            raise ValueError(f"sqrtm has a large imaginary part: {np.abs(covmean.imag).max()}")
        covmean = covmean.real
    diff = mu1 - mu2
    value = float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * np.trace(covmean))
    return max(value, 0.0)  # rounding can leave -1e-12 for identical distributions


def feature_frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """:func:`frechet_distance` between Gaussians fitted (mean, covariance) to two feature sets.

    Example:
        >>> f = np.random.default_rng(0).normal(size=(100, 4))
        >>> feature_frechet_distance(f, f) < 1e-6
        True
    """
    a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"need two (N >= 2, d) feature sets of equal d, got {a.shape}, {b.shape}")
    return frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


# -- probes: label information in z and in the code u -----------------------------------------
def _standardised_pairs(
    x: np.ndarray | Tensor, y: np.ndarray | Tensor, dtype: torch.dtype
) -> tuple[Tensor, Tensor, Callable[[np.ndarray | Tensor], Tensor]]:
    """Training inputs standardised by their own mean and std, the labels, and the same map for
    new inputs; the shapes checked."""
    xt = torch.as_tensor(np.asarray(x), dtype=dtype)
    yt = torch.as_tensor(np.asarray(y), dtype=torch.int64)
    if xt.ndim != 2 or len(xt) != len(yt) or len(xt) == 0:
        raise ValueError(f"x (N, d) and y (N,) disagree: {tuple(xt.shape)}, {tuple(yt.shape)}")
    mean, std = xt.mean(0), xt.std(0).clamp_min(1e-12)

    def standardise(x_new: np.ndarray | Tensor) -> Tensor:
        return (torch.as_tensor(np.asarray(x_new), dtype=dtype) - mean) / std

    return (xt - mean) / std, yt, standardise


def fit_logistic_regression(
    x: np.ndarray | Tensor,
    y: np.ndarray | Tensor,
    n_classes: int = N_CLASSES,
    l2: float = 1e-3,
    max_iter: int = 100,
) -> Callable[[np.ndarray | Tensor], np.ndarray]:
    """Fit a multinomial logistic regression of ``y`` on ``x``; return its class predictor.

    Inputs are standardised with the training mean and std; the weights minimise the mean
    cross-entropy plus ``l2/2 ||W||^2`` (a small ridge keeps separable data finite) by full-batch
    L-BFGS in float64, which is deterministic (no initial draw: W = 0).

    Example:
        >>> x = np.array([[-2.0], [-1.0], [1.0], [2.0]])
        >>> predict = fit_logistic_regression(x, np.array([0, 0, 1, 1]), n_classes=2)
        >>> predict(np.array([[-3.0], [3.0]])).tolist()
        [0, 1]
    """
    xs, yt, standardise = _standardised_pairs(x, y, torch.float64)
    weight = torch.zeros(xs.shape[1], n_classes, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight, bias], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe"
    )

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(xs @ weight + bias, yt) + 0.5 * l2 * (weight**2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    w, b = weight.detach(), bias.detach()

    def predict(x_new: np.ndarray | Tensor) -> np.ndarray:
        return (standardise(x_new) @ w + b).argmax(1).numpy()

    return predict


def probe_accuracy(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    n_classes: int = N_CLASSES,
) -> float:
    """Test accuracy of :func:`fit_logistic_regression` fitted on the training pairs.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> y = rng.integers(0, 2, 200)
        >>> x = rng.normal(size=(200, 2)) + 4.0 * y[:, None]
        >>> probe_accuracy(x[:100], y[:100], x[100:], y[100:], n_classes=2) > 0.95
        True
    """
    predict = fit_logistic_regression(train_x, train_y, n_classes)
    return float(np.mean(predict(test_x) == np.asarray(test_y)))


def code_classifier_accuracy(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    n_classes: int = N_CLASSES,
    hidden: int = 256,
    epochs: int = 20,
    batch_size: int = 256,
    lr: float = 1e-3,
    seed: int = 0,
) -> float:
    """Test accuracy of a plain discriminative classifier on fixed features (e.g. the 20-d code).

    A two-hidden-layer ReLU MLP of width ``hidden`` on standardised inputs, trained by
    cross-entropy with Adam for ``epochs`` epochs. On the auto-encoder's code it shows how much
    of the label the code itself gives away to a classifier trained for nothing else: the flow's
    forward pass classifies the same code, so this number puts Table 1 on a scale (where the
    linear :func:`probe_accuracy` only finds the linear part).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> x = rng.uniform(-1, 1, size=(2000, 2))
        >>> y = (x[:, 0] * x[:, 1] > 0).astype(np.int64)  # XOR: no linear map separates it
        >>> code_classifier_accuracy(x[:1500], y[:1500], x[1500:], y[1500:], n_classes=2) > 0.9
        True
    """
    xs, yt, standardise = _standardised_pairs(train_x, train_y, torch.float32)
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(xs.shape[1], hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, n_classes),
    )
    batches = EpochBatches(len(xs), min(batch_size, len(xs)), seed)
    optimizer = make_optimizer(model.parameters(), lr=lr)

    def step(i: int) -> dict[str, Tensor]:
        idx = batches(i)
        return {"loss": nn.functional.cross_entropy(model(xs[idx]), yt[idx])}

    fit(step, optimizer, epochs * batches.per_epoch, progress_every=0, seed=seed)
    with torch.no_grad():
        predicted = model(standardise(test_x)).argmax(1).numpy()
    return float(np.mean(predicted == np.asarray(test_y)))


# -- the cINN baseline on latents -------------------------------------------------------------
def bayes_log_posterior(
    log_likelihood: Callable[[Tensor, Tensor], Tensor],
    x: Tensor,
    n_classes: int,
    log_prior: Tensor | None = None,
) -> Tensor:
    """``log p(k | x)`` (N, n_classes) by Bayes' rule from ``log_likelihood(x, labels) -> (N,)``.

    Example:
        >>> ll = lambda x, k: -0.5 * ((x[:, 0] - k.double()) ** 2)  # N(k, 1) per class
        >>> bayes_log_posterior(ll, torch.tensor([[0.1], [0.9]]), 2).argmax(1).tolist()
        [0, 1]
    """
    scores = torch.stack(
        [
            log_likelihood(x, torch.full((len(x),), k, dtype=torch.int64, device=x.device))
            for k in range(n_classes)
        ],
        dim=1,
    )
    if log_prior is not None:
        scores = scores + log_prior.to(scores)
    return torch.log_softmax(scores, dim=1)


class LatentCINN(LatentModel):
    """The cINN baseline on auto-encoder latents: ``u <-> z`` given the one-hot label.

    Same standardisation of ``u`` as :class:`replicate.latent.LatentFlow` (train mean and std,
    stored with the model) and the same network size; the label enters every coupling subnet. The
    class prior for Bayes' rule is the training label frequency.

    Example:
        >>> cinn = LatentCINN(latent_dim=3, n_blocks=1, hidden=4)
        >>> u, y = torch.randn(5, 3), torch.tensor([0, 1, 2, 3, 4])
        >>> cinn.log_prob(u, y).shape, cinn.classify(u).shape, cinn.sample(y).shape
        (torch.Size([5]), torch.Size([5, 10]), torch.Size([5, 3]))
    """

    def __init__(
        self,
        latent_dim: int = 20,
        n_classes: int = N_CLASSES,
        n_blocks: int = 4,
        hidden: int = 64,
        subnet_layers: int = 3,
        clamp: float = 2.0,
        permutation_seed: int = 0,
    ) -> None:
        super().__init__(latent_dim, n_classes)
        self.cinn = ConditionalINN(
            latent_dim,
            n_classes,
            n_blocks=n_blocks,
            hidden=hidden,
            subnet_layers=subnet_layers,
            clamp=clamp,
            permutation_seed=permutation_seed,
        )
        self.register_buffer("log_prior", torch.full((n_classes,), -math.log(n_classes)))

    def set_statistics(self, u: Tensor, labels: Tensor) -> None:
        """Store the training latents' per-coordinate mean/std and the label frequencies."""
        self.set_standardisation(u.mean(0), u.std(0).clamp_min(1e-6))
        counts = torch.bincount(labels.cpu(), minlength=self.n_classes).double()
        self.log_prior.copy_(torch.log(counts.clamp_min(1) / counts.sum()))

    def nll(self, u: Tensor, labels: Tensor) -> Tensor:
        """Per-row training loss ``0.5||z||^2 - log|det J|`` (standardisation constant left out)."""
        return self.cinn.nll(self.standardise(u), self.one_hot(labels))

    def log_prob(self, u: Tensor, labels: Tensor) -> Tensor:
        """Exact ``log p(u | label)`` of raw latents, the standardisation's Jacobian included."""
        return (
            self.cinn.log_prob(self.standardise(u), self.one_hot(labels))
            - torch.log(self.u_std).sum()
        )

    @torch.no_grad()
    def classify(self, u: Tensor) -> Tensor:
        """Log posterior ``log p(k | u)`` (N, n_classes) by Bayes' rule: one pass per class."""
        return bayes_log_posterior(self.log_prob, u, self.n_classes, self.log_prior)

    @torch.no_grad()
    def encode(self, u: Tensor, labels: Tensor) -> Tensor:
        """The cINN's latent ``z = f(u; label)`` (it needs the label, unlike ours)."""
        return self.cinn.network(self.standardise(u), self.one_hot(labels))[0]

    @torch.no_grad()
    def sample(self, labels: Tensor, z: Tensor | None = None) -> Tensor:
        """Raw latents ``u ~ p(u | label)``, one per entry of ``labels``."""
        return self.destandardise(self.cinn.sample(self.one_hot(labels), z=z))


def _cinn_metadata(flow_config: Mapping[str, Any], latent_dim: int, seed: int) -> dict[str, Any]:
    return {"model": "latent_cinn", **network_kwargs(flow_config, latent_dim), "seed": seed}


def save_latent_cinn(
    path: str | os.PathLike, model: LatentCINN, flow_config: Mapping[str, Any], seed: int
) -> None:
    """Save a :class:`LatentCINN` (weights, permutations, statistics) as safetensors."""
    save_latent_model(path, model, _cinn_metadata(flow_config, model.latent_dim, seed), seed)


def load_latent_cinn(
    path: str | os.PathLike,
    flow_config: Mapping[str, Any],
    device: str | torch.device = "cpu",
) -> LatentCINN:
    """Load a :class:`LatentCINN` saved by :func:`save_latent_cinn` (eval mode).

    ``flow_config`` is the ``latent.flow`` section: its network keys must match the file's.

    Example:
        >>> import tempfile, pathlib
        >>> cfg = {"n_blocks": 1, "hidden": 4, "subnet_layers": 2, "clamp": 2.0}
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "cinn.safetensors"
        >>> save_latent_cinn(path, LatentCINN(3, n_blocks=1, hidden=4, subnet_layers=2), cfg, 0)
        >>> load_latent_cinn(path, cfg).sample(torch.tensor([1, 2])).shape
        torch.Size([2, 3])
    """
    return load_latent_model(
        path,
        lambda latent_dim, seed: LatentCINN(
            **network_kwargs(flow_config, latent_dim), permutation_seed=seed
        ),
        lambda latent_dim, seed: _cinn_metadata(flow_config, latent_dim, seed),
        device,
    )


def train_latent_cinn(
    train_u: np.ndarray,
    train_y: np.ndarray,
    flow_config: Mapping[str, Any],
    epochs: int,
    seed: int,
    device: str | torch.device = "cpu",
    progress_every: int = 100,
) -> tuple[LatentCINN, dict[str, Any]]:
    """Train the cINN on latents by its plain NLL, with ours' network, batch size and lr.

    Args:
        train_u, train_y: raw latents (N, d) and labels (N,).
        flow_config: the ``latent.flow`` section (network, ``batch_size``, ``lr``), so the
            baseline matches ours in everything but the method.
        epochs: ``latent.cinn.epochs``.
        seed: seeds the initialisation, the permutations and the shuffling.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> u, y = rng.normal(size=(64, 4)).astype(np.float32), rng.integers(0, 10, 64)
        >>> cfg = {"n_blocks": 1, "hidden": 8, "subnet_layers": 2, "clamp": 2.0,
        ...        "batch_size": 32, "lr": 1e-3}
        >>> model, summary = train_latent_cinn(u, y, cfg, epochs=2, seed=0, progress_every=0)
        >>> len(summary["epoch_loss"])
        2
    """
    device = torch.device(device)
    u = torch.as_tensor(np.asarray(train_u, dtype=np.float32)).to(device)
    y = torch.as_tensor(np.asarray(train_y, dtype=np.int64)).to(device)
    if u.ndim != 2 or len(u) != len(y) or len(u) == 0:
        raise ValueError(f"train_u (N, d) and train_y (N,) disagree: {u.shape} vs {y.shape}")
    latent_dim = u.shape[1]
    batches = EpochBatches(len(u), int(flow_config["batch_size"]), seed, device=device)
    torch.manual_seed(seed)
    model = LatentCINN(**network_kwargs(flow_config, latent_dim), permutation_seed=seed).to(device)
    model.set_statistics(u, y)
    optimizer = make_optimizer(model.parameters(), lr=float(flow_config["lr"]))

    def step(i: int) -> dict[str, Tensor]:
        idx = batches(i)
        return {"loss": model.nll(u[idx], y[idx]).mean()}

    model.train()
    result = fit(
        step,
        optimizer,
        int(epochs) * batches.per_epoch,
        progress_every=progress_every,
        what="cINN iteration",
        segment=batches.per_epoch,
        segment_name="cINN epoch",
        seed=seed,
    )
    summary = {
        "epoch_loss": result.segment_means(batches.per_epoch),
        "seconds": result.seconds,
        "seconds_per_iteration": result.seconds_per_iteration,
        "batches_per_epoch": batches.per_epoch,
    }
    return model.eval(), summary


@torch.no_grad()
def _batched(fn: Callable[..., Tensor], *arrays: Tensor, batch_size: int = 2000) -> Tensor:
    n = len(arrays[0])
    return torch.cat(
        [fn(*(a[s : s + batch_size] for a in arrays)) for s in range(0, n, batch_size)]
    )


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
    from replicate.metrics import summarise

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


def _markdown(table: pd.DataFrame) -> str:
    """The table with ``mean +- std`` cells (``-`` where a model has no such number)."""
    from replicate.metrics import mean_std_cells

    shown = table[["dataset", "model"]].copy()
    for metric in TABLE_METRICS:
        mean, std = table[f"{metric}_mean"], table[f"{metric}_std"]
        digits = 2 if metric == "frechet_distance" else 4
        shown[metric] = mean_std_cells(mean, std, digits, missing="-")
    shown["chance_accuracy"] = table["chance_accuracy"]
    shown["n_seeds"] = table["n_seeds"]
    return shown.to_markdown(index=False, floatfmt=".2f") + "\n"


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
        "test_accuracy": float(np.mean(logits.argmax(1) == test_y)),
        "train_accuracy": float(
            np.mean(classifier_outputs(model, train_x)[0].argmax(1) == train_y)
        ),
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
    device: str = "cpu",
    threads: int | None = None,
    history_path: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Rule ``train_latent_cinn``: one seed's cINN on the training latents, saved; its per-epoch
    training NLL and timings go to ``history_path`` (JSON) when given."""
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
) -> None:
    """Rule ``sample_latent_cinn``: as ``samples_seed{seed}.npz`` of ours, from the cINN."""
    from replicate.autoencoder import load_autoencoder
    from replicate.latent import decode_to_uint8

    model = load_latent_cinn(cinn_path, latent_config["flow"])
    ae = load_autoencoder(autoencoder_path, latent_config["autoencoder"])
    torch.manual_seed(seed)
    labels = torch.arange(N_CLASSES).repeat_interleave(
        int(latent_config["n_eval_samples_per_class"])
    )
    images = decode_to_uint8(ae, model.sample(labels))
    write_npz(samples_path, images=images, labels=labels.numpy().astype(np.int64))
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
        from replicate.latent import load_latent_flow

        flow = load_latent_flow(model_path, latent_config["flow"])
        scores = _batched(flow.predict, u["test"])
        z = {s: _batched(flow.encode, u[s]) for s in u}
    elif model_name == "cinn":
        cinn = load_latent_cinn(model_path, latent_config["flow"])
        scores = _batched(cinn.classify, u["test"])
        z = {s: _batched(cinn.encode, u[s], y[s]) for s in u}
    else:
        raise ValueError(f"unknown model '{model_name}': use ours or cinn")
    test_accuracy = float((scores.argmax(1) == y["test"]).double().mean())
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
        "sample_accuracy": float(np.mean(logits.argmax(1) == labels)),
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
    from replicate.autoencoder import load_autoencoder
    from replicate.latent import decode_to_uint8

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
            sample_accuracy=float(np.mean(real_logits.argmax(1) == real_labels)),
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
                sample_accuracy=float(np.mean(logits.argmax(1) == labels)),
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
    write_table(table, csv_path, md_path, _markdown(table))
    log.info("latent metrics:\n%s", table.to_string(index=False))
    return table
