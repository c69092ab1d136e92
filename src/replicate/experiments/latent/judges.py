"""Beyond the paper for E3: an independent judge of generated images, and how much label
information the flow's dummy variable z still carries.

- :class:`ImageClassifier`: a small CNN trained on the real training images. It judges generated
  samples: (a) the share it labels as the class they were generated for, and (b) a Frechet distance
  between its penultimate-layer features of generated and real test images
  (:func:`feature_frechet_distance`). Inception weights cannot be downloaded here, so this distance
  lives in another feature space and is NOT comparable to published FID numbers.
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

import os
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import scipy.linalg
import torch
from torch import Tensor, nn

from replicate.checkpoints import load_checkpoint, save_checkpoint
from replicate.experiments.latent.autoencoder import to_unit_images
from replicate.experiments.latent.models import (
    N_CLASSES,
)
from replicate.metrics import accuracy
from replicate.training import EpochBatches, fit, fit_epochs, make_optimizer
from replicate.training_steps import TrainingSetup, TrainingStep

__all__ = [
    "classifier_outputs",
    "classifier_training_setup",
    "code_classifier_accuracy",
    "feature_frechet_distance",
    "fit_logistic_regression",
    "frechet_distance",
    "ImageClassifier",
    "judge_images",
    "load_classifier",
    "probe_accuracy",
    "save_classifier",
    "train_classifier",
]


FEATURE_DIM = 128


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


def classifier_training_setup(
    images: np.ndarray,
    labels: np.ndarray,
    config: Mapping[str, Any],
    seed: int,
    device: str | torch.device = "cpu",
) -> tuple[TrainingSetup, EpochBatches]:
    """:class:`ImageClassifier` (initialised from ``seed``), its Adam, its cross-entropy step on
    shuffled batches of the uint8 (N, 28, 28) ``images`` (held on the device), and the batches.
    """
    device = torch.device(device)
    x = to_unit_images(_as_uint8_images(images)).to(device)
    y = torch.as_tensor(np.asarray(labels, dtype=np.int64)).to(device)
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"images ({len(x)}) and labels ({len(y)}) disagree or are empty")
    batches = EpochBatches(len(x), int(config["batch_size"]), seed, device=device)
    torch.manual_seed(seed)
    model = ImageClassifier().to(device)
    optimizer = make_optimizer(model.parameters(), lr=float(config["lr"]))
    loss_fn = nn.CrossEntropyLoss()

    def inputs(i: int) -> dict[str, Tensor]:
        rows = batches(i)
        return {"images": x[rows], "labels": y[rows]}

    def loss_terms(images: Tensor, labels: Tensor) -> dict[str, Tensor]:
        return {"loss": loss_fn(model(images), labels)}

    return TrainingSetup(model, optimizer, TrainingStep(inputs, loss_terms)), batches


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
    setup, batches = classifier_training_setup(images, labels, config, seed, device)
    model, epochs = setup.model, int(config["epochs"])
    model.train()
    result = fit_epochs(
        setup, batches, epochs, seed=seed, name="classifier", progress_every=progress_every
    )
    summary = {
        "epoch_loss": result.segment_means(batches.per_epoch),
        "seconds": result.seconds,
        "seconds_per_iteration": result.seconds_per_iteration,
        "n_train": batches.n,
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


def judge_images(
    classifier: ImageClassifier,
    images: np.ndarray,
    labels: np.ndarray,
    real_features: np.ndarray,
) -> dict[str, float]:
    """How the judging classifier sees uint8 ``images`` (N, 28, 28) made for ``labels``:
    ``sample_accuracy`` (its predictions against those labels) and ``frechet_distance`` of their
    features to ``real_features`` (the real test images', :func:`classifier_outputs`).

    Example:
        >>> clf = ImageClassifier().eval()
        >>> imgs = np.zeros((4, 28, 28), np.uint8)
        >>> _, real = classifier_outputs(clf, imgs)
        >>> sorted(judge_images(clf, imgs, np.zeros(4, np.int64), real))
        ['frechet_distance', 'sample_accuracy']
    """
    logits, features = classifier_outputs(classifier, images)
    return {
        "sample_accuracy": accuracy(logits, labels),
        "frechet_distance": feature_frechet_distance(features, real_features),
    }


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

    def inputs(i: int) -> dict[str, Tensor]:
        rows = batches(i)
        return {"codes": xs[rows], "labels": yt[rows]}

    def loss_terms(codes: Tensor, labels: Tensor) -> dict[str, Tensor]:
        return {"loss": nn.functional.cross_entropy(model(codes), labels)}

    step = TrainingStep(inputs, loss_terms)
    fit(step, optimizer, epochs * batches.per_epoch, progress_every=0, seed=seed)
    with torch.no_grad():
        predicted = model(standardise(test_x)).argmax(1).numpy()
    return float(np.mean(predicted == np.asarray(test_y)))
