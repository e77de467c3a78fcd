"""Config sections of ArtBench: the painting folder (artist = contributor), Stable Diffusion + LoRA
(``sd_lora``) and the LAION aesthetic predictor (``laion_aesthetic``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from contribshap.pipeline.config.sections import Section
from pydantic import Field


class ArtBenchSource(Section):
    """An ArtBench-10 style image folder; the artist of each painting is its contributor.

    Artist from ``metadata_csv`` (ArtBench-10.csv: columns ``name``, ``artist``, optional ``label`` = style)
    when given, else from the file name ``<artist>_<title>.jpg`` (ArtBench's naming). Images are looked up
    under ``root/<style>/`` when that folder exists, else under ``root``.

    Attributes:
        root: the image folder (e.g. ``artbench-10-imagefolder-split/train``).
        metadata_csv: optional metadata file (default None: artist from the file name).
        style: the style folder / label to keep (default ``post_impressionism``; None = all files).
        artists: explicit artist ids to keep (default None: all with >= ``min_images``).
        min_images: drop artists with fewer images (default 1).
        max_per_artist: cap images per artist (default None).
        image_size: side in pixels (default 256, ArtBench's resolution).
        prompt: the training and sampling prompt for every image (default "a post-impressionism painting").
    """

    source: Literal["artbench"] = "artbench"
    root: Path
    metadata_csv: Path | None = None
    style: str | None = "post_impressionism"
    artists: list[str] | None = None
    min_images: int = Field(1, ge=1)
    max_per_artist: int | None = Field(None, ge=1)
    image_size: int = Field(256, ge=8)
    prompt: str = "a post-impressionism painting"

    def paths(self) -> dict[str, Path | None]:
        return {"data.root": self.root, "data.metadata_csv": self.metadata_csv}


class SDLoraModelConfig(Section):
    """Stable Diffusion 1.x from a local folder, fine-tuned with LoRA (peft) on the attention projections.

    θ* = the base UNet + a LoRA trained on all data; pruning keeps the highest-magnitude rank components of
    every LoRA layer (``prune.ratio`` = fraction of rank components removed, across all layers); the null
    model is the base pipeline without LoRA (set ``null_model: base``).

    Attributes:
        pipeline: local SD 1.x folder with ``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``.
        lora_weights: optional local LoRA for θ* (safetensors from a previous prepare; skips ``train``).
        rank / alpha: LoRA rank r and alpha (default 64 / 64: scale alpha/r = 1).
        target_modules: modules that get LoRA (default the attention projections to_q/to_k/to_v/to_out.0).
        guidance_scale: classifier-free guidance at sampling (default 7.5; 1 = none).
        encode_batch_size: images per VAE encode/decode call (default 8).
    """

    kind: Literal["sd_lora"] = "sd_lora"
    pipeline: Path
    lora_weights: Path | None = None
    rank: int = Field(64, ge=1)
    alpha: float | None = Field(None, gt=0)
    target_modules: list[str] = Field(default_factory=lambda: ["to_q", "to_k", "to_v", "to_out.0"])
    guidance_scale: float = Field(7.5, ge=1.0)
    encode_batch_size: int = Field(8, ge=1)

    def paths(self) -> dict[str, Path | None]:
        root = Path(self.pipeline)
        found = {"model.pipeline": root, "model.lora_weights": self.lora_weights}
        for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
            found[f"model.pipeline/{sub}"] = root / sub
        return found


class AestheticExtractor(Section):
    """LAION aesthetic predictor: a linear head on CLIP ViT-L/14 image embeddings (both local files).

    Gives ``aesthetic_mean`` and ``aesthetic_p90`` (90th percentile of the per-image scores).

    Attributes:
        clip: local ``CLIPVisionModelWithProjection`` folder (openai/clip-vit-large-patch14).
        head: the linear head (``sa_0_4_vit_l_14_linear.pth`` or a safetensors with ``weight``/``bias``).
        batch_size: images per CLIP forward (default 32).
    """

    kind: Literal["laion_aesthetic"] = "laion_aesthetic"
    clip: Path
    head: Path
    batch_size: int = Field(32, ge=1)

    def paths(self) -> dict[str, Path | None]:
        return {"feature_extractor.clip": self.clip, "feature_extractor.head": self.head}


#: Property names this use case adds (accepted in ``properties:`` next to the built-ins).
ARTBENCH_PROPERTIES: tuple[str, ...] = ("aesthetic_mean", "aesthetic_p90")


def check(game: Any) -> list[str]:
    """Cross-section rules of ``sd_lora`` for a ``DiffusionGameConfig`` ``game`` (the schema calls it while it
    validates; typed loosely because the schema imports this module): v(∅) is the base pipeline without LoRA."""
    if game.model.kind == "sd_lora" and game.null_model != "base":
        return [f"null_model={game.null_model!r} with model.kind=sd_lora: v(∅) is the base pipeline without LoRA; "
                "set null_model: base"]
    return []
