"""ArtBench's property: the LAION aesthetic predictor v1, a linear head (768 -> 1) on L2-normalised CLIP
ViT-L/14 image embeddings (both local files). Its feature is the per-image score (N, 1); the properties
``aesthetic_mean`` and ``aesthetic_p90`` (90th percentile) read it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from contribshap.workers.properties.base import GeneratedFeatures, Reference
from contribshap.workers.properties.embeddings import ImageEmbedder
from contribshap.workers.properties.extractors import EXTRACTOR_JSON, Extractor, ExtractorKind

if TYPE_CHECKING:
    from contribshap.usecases.artbench.schema import AestheticExtractor
    from contribshap.workers.data import ContributorDataset


def load_linear_head(path: str | Path) -> tuple[np.ndarray, float]:
    """Load the LAION linear aesthetic head: a state dict with ``weight`` (1, D) and ``bias`` (1,).

    Accepts ``.safetensors`` or a torch ``.pth``/``.pt`` state dict (loaded with ``weights_only=True``), with
    or without a module prefix (``linear.weight``). Returns (w float64 (D,), b float).
    """
    path = Path(path).expanduser()
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    weights = {k.rsplit(".", 1)[-1]: v for k, v in state.items() if k.rsplit(".", 1)[-1] in ("weight", "bias")}
    if len(state) != 2 or set(weights) != {"weight", "bias"} or weights["weight"].ndim != 2 or weights["weight"].shape[0] != 1:
        raise ValueError(
            f"feature_extractor.head: {path} is not one linear layer (expected keys weight (1, D) and bias (1,), "
            f"found {sorted(state)}); use LAION's sa_0_4_vit_l_14_linear.pth"
        )
    return weights["weight"][0].double().numpy(), float(weights["bias"].reshape(-1)[0])


class AestheticExtractor(Extractor):
    """Feature = the aesthetic score w . normalize(clip(x)) + b, shape (N, 1); no class head."""

    n_classes = 1

    def __init__(self, embedder: ImageEmbedder, w: np.ndarray, b: float) -> None:
        self.embedder, self.w, self.b = embedder, w, b

    def scores(self, images: torch.Tensor) -> np.ndarray:
        emb = self.embedder(images)
        if emb.shape[1] != self.w.shape[0]:
            raise ValueError(
                f"feature_extractor.head expects {self.w.shape[0]}-d embeddings but feature_extractor.clip gives "
                f"{emb.shape[1]}; pair CLIP ViT-L/14 (768-d) with the LAION ViT-L/14 head"
            )
        return emb @ self.w + self.b

    def __call__(self, images: torch.Tensor) -> GeneratedFeatures:
        return GeneratedFeatures(features=self.scores(images)[:, None], probs=None)


def _fit_aesthetic(config: AestheticExtractor, dataset: ContributorDataset, folder: Path, *, seed: int, device: torch.device) -> dict[str, Any]:
    w, _ = load_linear_head(config.head)
    folder.mkdir(parents=True, exist_ok=True)
    summary = {"kind": "laion_aesthetic", "clip": str(config.clip), "head": str(config.head), "embedding_dim": len(w)}
    (folder / EXTRACTOR_JSON).write_text(json.dumps(summary, indent=1))
    return summary


def _load_aesthetic(config: AestheticExtractor, folder: Path, *, device: torch.device) -> Extractor:
    w, b = load_linear_head(config.head)
    return AestheticExtractor(ImageEmbedder("clip", config.clip, device=device, batch_size=config.batch_size), w, b)


#: ``feature_extractor.kind: laion_aesthetic``.
LAION_AESTHETIC = ExtractorKind(fit=_fit_aesthetic, load=_load_aesthetic)


def _aesthetic_scores(generated: GeneratedFeatures, name: str) -> np.ndarray:
    if generated.features.ndim != 2 or generated.features.shape[1] != 1:
        raise ValueError(f"property {name} needs feature_extractor.kind: laion_aesthetic (one score per image)")
    return generated.features[:, 0]


def aesthetic_mean(generated: GeneratedFeatures, reference: Reference) -> float:
    """Mean LAION aesthetic score of the generated images (higher is better; ~1..10)."""
    return float(_aesthetic_scores(generated, "aesthetic_mean").mean())


def aesthetic_p90(generated: GeneratedFeatures, reference: Reference) -> float:
    """90th percentile of the LAION aesthetic scores (the best images; higher is better)."""
    return float(np.quantile(_aesthetic_scores(generated, "aesthetic_p90"), 0.9))
