"""Feature extractors: images -> (features, class probabilities) for the properties.

A kind (``feature_extractor.kind``) is an :class:`ExtractorKind` registered in
:data:`contribshap.workers.registry.EXTRACTORS`; it provides
``fit(config, dataset, folder, *, seed, device) -> dict`` (build the artifact in ``folder``; a no-op for
pretrained weights) and ``load(config, folder, *, device) -> Extractor``. Built-ins:

- ``digits_cnn``: a 2-conv CNN trained on the data's labelled images during prepare (3 s on a CPU core for
  the 8x8 digits; any square size and 1 or 3 channels, e.g. a labelled ``folder``): on the data's
  extractor split when it has one (``holdout_fraction``: images neither the diffusion model nor the FID
  reference uses), else on the labelled genuine training images. Features are the 32 pre-ReLU
  activations of its hidden layer, probabilities its softmax. Its held-out accuracy is written to
  ``<folder>/extractor.json`` and reported by prepare.
- ``inception``: clean-fid's TorchScript Inception-v3 (``inception-2015-12-05.pt``) from a local file.
  ``torch.jit.load`` executes code from that file: it must be a file you trust.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from contribshap.workers.properties.base import GeneratedFeatures

if TYPE_CHECKING:
    from contribshap.pipeline.config.diffusion import DigitsCNNExtractor, InceptionExtractor
    from contribshap.workers.data import ContributorDataset

EXTRACTOR_JSON = "extractor.json"


class Extractor:
    """Callable images (N, C, H, W) in [-1, 1] -> :class:`GeneratedFeatures`; ``n_classes`` = K."""

    n_classes: int

    def __call__(self, images: torch.Tensor) -> GeneratedFeatures:  # pragma: no cover - interface
        raise NotImplementedError


@dataclass(frozen=True)
class ExtractorKind:
    """``fit(config, dataset, folder, *, seed, device) -> summary`` and ``load(config, folder, *, device)``."""

    fit: Callable[..., dict[str, Any]]
    load: Callable[..., Extractor]


def extractor_kind(kind: str) -> ExtractorKind:
    """The registered functions of ``kind`` (:data:`contribshap.workers.registry.EXTRACTORS`)."""
    from contribshap.workers.registry import EXTRACTORS

    return EXTRACTORS.get(kind)


# ----------------------------------------------------------------------------------------------------
# digits_cnn
# ----------------------------------------------------------------------------------------------------
#: Largest side of the CNN's pooled map: larger images are average-pooled down to it before the linear layer.
DIGITS_CNN_MAX_POOLED = 8


class DigitsCNN(torch.nn.Module):
    """conv(C->16) ReLU conv(16->32) ReLU maxpool [-> average pool to at most 8x8] -> linear(32·s² -> feature_dim)
    [features] ReLU -> linear(K), with s = min(side // 2, 8) (8x8 digits: s = 4, no average pool)."""

    def __init__(self, n_classes: int, feature_dim: int = 32, in_channels: int = 1, side: int = 8) -> None:
        super().__init__()
        self.pooled = min(side // 2, DIGITS_CNN_MAX_POOLED)
        self.conv1 = torch.nn.Conv2d(in_channels, 16, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(16, 32, 3, padding=1)
        self.hidden = torch.nn.Linear(32 * self.pooled ** 2, feature_dim)
        self.head = torch.nn.Linear(feature_dim, n_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (N, C, side, side) in [-1, 1] -> (features (N, feature_dim) pre-ReLU, logits (N, K))."""
        h = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
        if h.shape[-1] != self.pooled or h.shape[-2] != self.pooled:
            h = F.adaptive_avg_pool2d(h, self.pooled)
        h = h.flatten(1)
        features = self.hidden(h)
        return features, self.head(F.relu(features))


class _DigitsExtractor(Extractor):
    def __init__(self, net: DigitsCNN, device: torch.device, n_classes: int) -> None:
        self.net, self.device, self.n_classes = net.eval().to(device), device, n_classes

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> GeneratedFeatures:
        features, logits = self.net(images.to(self.device))
        probs = torch.softmax(logits.double(), dim=1)
        return GeneratedFeatures(features=features.double().cpu().numpy(), probs=probs.cpu().numpy())


def _fit_digits_cnn(config: DigitsCNNExtractor, dataset: ContributorDataset, folder: Path, *, seed: int, device: torch.device) -> dict[str, Any]:
    """Train the CNN on the extractor split (else the labelled genuine images); save safetensors + ``extractor.json``."""
    from safetensors.torch import save_file

    # 1. Labelled images (the extractor's own split when the data holds one out), a seeded test split.
    if dataset.extractor_images is not None:
        images, labels, trained_on = dataset.extractor_images, dataset.extractor_labels, "extractor_split"
    else:
        if dataset.labels is None:
            raise ValueError("feature_extractor.kind=digits_cnn needs class labels; the data source has none")
        keep = torch.nonzero(dataset.labels >= 0).flatten()
        images, labels, trained_on = dataset.images[keep], dataset.labels[keep], "training_images"
    classes = sorted(set(labels.tolist()))
    targets = torch.as_tensor(np.searchsorted(np.asarray(classes), labels.numpy()), dtype=torch.int64)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(images), generator=generator)
    n_test = max(1, round(config.test_fraction * len(images)))
    test, train = order[:n_test], order[n_test:]

    # 2. Train (Adam, cross-entropy).
    torch.manual_seed(seed)
    net = DigitsCNN(len(classes), config.feature_dim, images.shape[1], images.shape[-1]).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
    for _ in range(config.steps):
        batch = train[torch.randint(0, len(train), (config.batch_size,), generator=generator)]
        _, logits = net(images[batch].to(device))
        loss = F.cross_entropy(logits, targets[batch].to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    # 3. Held-out accuracy, save.
    net.eval()
    with torch.no_grad():
        accuracy = float((net(images[test].to(device))[1].argmax(1).cpu() == targets[test]).float().mean())
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}, str(folder / "extractor.safetensors"))
    summary = {
        "kind": "digits_cnn",
        "classes": classes,
        "feature_dim": config.feature_dim,
        "in_channels": int(images.shape[1]),
        "side": int(images.shape[-1]),
        "test_accuracy": accuracy,
        "n_train": len(train),
        "n_test": len(test),
        "trained_on": trained_on,
    }
    (folder / EXTRACTOR_JSON).write_text(json.dumps(summary, indent=1))
    return summary


def _load_digits_cnn(config: DigitsCNNExtractor, folder: Path, *, device: torch.device) -> Extractor:
    from safetensors.torch import load_file

    meta_path, weights = folder / EXTRACTOR_JSON, folder / "extractor.safetensors"
    if not meta_path.is_file() or not weights.is_file():
        raise FileNotFoundError(f"feature extractor {folder} is incomplete (needs {EXTRACTOR_JSON} and extractor.safetensors); re-run prepare")
    meta = json.loads(meta_path.read_text())
    net = DigitsCNN(len(meta["classes"]), meta["feature_dim"], meta["in_channels"], meta["side"])
    net.load_state_dict(load_file(str(weights)))
    return _DigitsExtractor(net, device, len(meta["classes"]))


#: ``feature_extractor.kind: digits_cnn``.
DIGITS_CNN = ExtractorKind(fit=_fit_digits_cnn, load=_load_digits_cnn)


# ----------------------------------------------------------------------------------------------------
# inception (clean-fid's TorchScript file, local only)
# ----------------------------------------------------------------------------------------------------
class _InceptionExtractor(Extractor):
    """clean-fid / StyleGAN2-ADA TorchScript Inception: ``return_features=True`` -> 2048 pool features,
    ``no_output_bias=True`` -> 1008 softmax probabilities. Input: float RGB in [0, 255], 299x299."""

    n_classes = 1008

    def __init__(self, module: Any, device: torch.device, batch_size: int) -> None:
        self.module, self.device, self.batch_size = module, device, batch_size

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> GeneratedFeatures:
        features, probs = [], []
        for begin in range(0, len(images), self.batch_size):
            x = images[begin : begin + self.batch_size].to(self.device)
            x = x.repeat(1, 3, 1, 1) if x.shape[1] == 1 else x
            x = F.interpolate((x + 1.0) * 127.5, size=(299, 299), mode="bilinear", align_corners=False)
            features.append(self.module(x, return_features=True).double().cpu())
            probs.append(self.module(x, no_output_bias=True).double().cpu())
        return GeneratedFeatures(features=torch.cat(features).numpy(), probs=torch.cat(probs).numpy())


def _fit_inception(config: InceptionExtractor, dataset: ContributorDataset, folder: Path, *, seed: int, device: torch.device) -> dict[str, Any]:
    if not Path(config.weights).expanduser().is_file():
        raise FileNotFoundError(f"feature_extractor.weights: {config.weights} does not exist; copy clean-fid's inception-2015-12-05.pt there")
    folder.mkdir(parents=True, exist_ok=True)
    summary = {"kind": "inception", "weights": str(config.weights)}
    (folder / EXTRACTOR_JSON).write_text(json.dumps(summary, indent=1))
    return summary


def _load_inception(config: InceptionExtractor, folder: Path, *, device: torch.device) -> Extractor:
    """Load clean-fid's TorchScript Inception from ``feature_extractor.weights`` with ``torch.jit.load``.

    Security: a TorchScript file is a program; loading it executes code from the file. Use only a file you
    trust (clean-fid's ``inception-2015-12-05.pt`` downloaded from its official URL, kept read-only).
    """
    path = Path(config.weights).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"feature_extractor.weights: {path} does not exist; copy clean-fid's inception-2015-12-05.pt there")
    module = torch.jit.load(str(path), map_location=device).eval()
    return _InceptionExtractor(module, device, config.batch_size)


#: ``feature_extractor.kind: inception``.
INCEPTION = ExtractorKind(fit=_fit_inception, load=_load_inception)
