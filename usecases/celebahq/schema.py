"""Config sections of CelebA-HQ: the face folder as a data source, latent diffusion on VQ latents (``ldm``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from contribshap.pipeline.config.sections import Section, UNetModelConfig
from pydantic import Field


class CelebAHQSource(Section):
    """A CelebA-HQ style folder of face images plus ``labels.csv`` (columns ``file,identity``).

    The ``n_identities`` identities with the most images (ties by id) are the contributors (the paper: 50),
    unless ``identities`` lists them. Images are RGB, resized to ``image_size``.

    Attributes:
        root: folder with the images (``file`` paths are relative to it).
        labels_csv: identity file (default ``<root>/labels.csv``).
        identities: explicit identity ids to keep (default None: the largest ``n_identities``).
        n_identities: number of identities when ``identities`` is None (default 50).
        max_per_identity: cap images per identity (default None: all).
        image_size: side in pixels (default 256, the LDM CelebA-HQ resolution).
    """

    source: Literal["celebahq"] = "celebahq"
    root: Path
    labels_csv: Path | None = None
    identities: list[str] | None = None
    n_identities: int = Field(50, ge=1)
    max_per_identity: int | None = Field(None, ge=1)
    image_size: int = Field(256, ge=8)

    def csv_path(self) -> Path:
        return self.labels_csv if self.labels_csv is not None else Path(self.root) / "labels.csv"

    def paths(self) -> dict[str, Path | None]:
        return {"data.root": self.root, "data.labels_csv": self.csv_path()}


class LDMModelConfig(UNetModelConfig):
    """Latent diffusion: a ``UNet2DModel`` on the latents of a local ``VQModel`` (the CompVis LDM CelebA-HQ).

    Every UNet field of ``kind: unet`` applies in latent space (``sample_size`` = latent side,
    ``in_channels`` = latent channels). Training images are encoded once by the VQ-VAE and cached in the
    artifacts (``latents-<hash>.safetensors``); generated latents are decoded for the properties.

    Attributes:
        vqvae: local ``VQModel`` folder (``save_pretrained`` layout, e.g. ``ldm-celebahq-256/vqvae``).
        latent_scale: latents are multiplied by this before diffusion (default 1.0, as the LDM pipeline).
        encode_batch_size: images per VQ-VAE encode/decode call (default 16).
    """

    kind: Literal["ldm"] = "ldm"
    vqvae: Path
    latent_scale: float = Field(1.0, gt=0)
    encode_batch_size: int = Field(16, ge=1)

    def paths(self) -> dict[str, Path | None]:
        return {"model.pretrained": self.pretrained, "model.vqvae": self.vqvae}
