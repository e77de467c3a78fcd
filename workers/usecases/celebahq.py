"""CelebA-HQ (the paper's demographic-diversity setting): identities as contributors, latent diffusion.

Data: a folder of face images plus ``labels.csv`` with the columns ``file`` (relative to the folder) and
``identity``; the 50 identities with the most images are the contributors (or an explicit list).

Model (``model.kind: ldm``): a ``UNet2DModel`` on the latents of a local ``VQModel`` (the CompVis LDM
CelebA-HQ pipeline: ``VQModel.from_pretrained(<ldm-celebahq-256>/vqvae)``, 256x256 images -> 3x64x64
latents). Images are encoded once and cached in the artifacts (``latents-<hash>.safetensors``); generated
latents are decoded to images for the properties. The noise scheduler keeps latents unclipped
(``clip_sample=False``, as the LDM scheduler).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from contribshap.pipeline.games import Contributor
from contribshap.workers.data import ContributorDataset, register_source
from contribshap.workers.models import ModelKind, model_kind, register_model
from tqdm.auto import tqdm


# ----------------------------------------------------------------------------------------------------------
# Data: folder + labels.csv
# ----------------------------------------------------------------------------------------------------------
def read_celebahq_index(config: Any) -> tuple[list[Path], np.ndarray, list[str]]:
    """The files and owners of ``data.source: celebahq`` without reading any image.

    Returns:
        files (N,), owner int64 (N,) indexing ``identities``, identities (contributor order: sorted ids).
    """
    root = Path(config.root).expanduser()
    csv_path = Path(config.csv_path()).expanduser()
    if not csv_path.is_file():
        raise FileNotFoundError(f"data.labels_csv: {csv_path} does not exist; write file,identity rows there")
    with csv_path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"file", "identity"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{csv_path} lacks columns {sorted(missing)}; the header must be file,identity")
        rows = [(row["file"], str(row["identity"])) for row in reader]
    counts: dict[str, int] = {}
    for _, identity in rows:
        counts[identity] = counts.get(identity, 0) + 1
    if config.identities is not None:
        unknown = sorted(set(config.identities) - set(counts))
        if unknown:
            raise ValueError(f"data.identities {unknown} do not occur in {csv_path}; check the ids")
        chosen = list(config.identities)
    else:
        if len(counts) < config.n_identities:
            raise ValueError(f"data.n_identities={config.n_identities} but {csv_path} has only {len(counts)} identities")
        chosen = sorted(counts, key=lambda i: (-counts[i], i))[: config.n_identities]
    identities = sorted(chosen)
    position = {identity: j for j, identity in enumerate(identities)}
    files, owner, taken = [], [], dict.fromkeys(identities, 0)
    for file, identity in rows:
        if identity in position and (config.max_per_identity is None or taken[identity] < config.max_per_identity):
            files.append(root / file)
            owner.append(position[identity])
            taken[identity] += 1
    return files, np.asarray(owner, dtype=np.int64), identities


def read_images(files: list[Path], size: int, *, desc: str = "read images") -> torch.Tensor:
    """RGB images resized to ``size`` as float32 (N, 3, size, size) in [-1, 1]; a bad file names itself."""
    from PIL import Image, UnidentifiedImageError

    out = np.empty((len(files), 3, size, size), dtype=np.float32)
    for i, path in enumerate(tqdm(files, desc=desc, leave=False, disable=len(files) < 500)):
        if not path.is_file():
            raise FileNotFoundError(f"image {path} is listed but does not exist; fix the labels file or add the image")
        try:
            with Image.open(path) as image:
                rgb = image.convert("RGB").resize((size, size), Image.Resampling.BICUBIC)
        except (UnidentifiedImageError, OSError, ValueError) as error:
            raise ValueError(f"image {path} is corrupt or not an image ({error}); replace or remove it") from None
        out[i] = np.asarray(rgb, dtype=np.float32).transpose(2, 0, 1) / 127.5 - 1.0
    return torch.from_numpy(out)


@register_source("celebahq")
def load_celebahq(config: Any) -> ContributorDataset:
    """``data.source: celebahq`` -> pixels in [-1, 1] (N, 3, S, S); contributor ids ``celebahq-<identity>``."""
    files, owner, identities = read_celebahq_index(config)
    contributors = [Contributor(f"celebahq-{i}", f"identity {i}", int((owner == j).sum())) for j, i in enumerate(identities)]
    return ContributorDataset(
        images=read_images(files, config.image_size, desc="celebahq images"),
        contributor_index=torch.from_numpy(owner),
        contributors=contributors,
    )


# ----------------------------------------------------------------------------------------------------------
# Latent codec: VQModel from a local folder, latents cached once
# ----------------------------------------------------------------------------------------------------------
class VQCodec:
    """Encode images to VQ latents and decode latents to images (``latent_scale`` applied both ways).

    Args:
        folder: local ``VQModel`` folder (``config.json`` + safetensors/bin weights).
        latent_scale: z_diffusion = latent_scale * vq.encode(x).latents (default 1.0, as the LDM pipeline).
        device / batch_size: where and how many images per call.
    """

    def __init__(self, folder: str | Path, *, latent_scale: float = 1.0, device: torch.device | str = "cpu", batch_size: int = 16):
        from diffusers import VQModel

        self.folder = Path(folder).expanduser()
        self.vq = VQModel.from_pretrained(str(self.folder), local_files_only=True).to(device).eval()
        self.latent_scale = float(latent_scale)
        self.device = torch.device(device)
        self.batch_size = batch_size

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """float (N, 3, H, W) in [-1, 1] -> latents (N, C, h, w) on CPU (pre-quantisation, as the LDM)."""
        outs = [
            self.vq.encode(images[i : i + self.batch_size].to(self.device)).latents.float().cpu()
            for i in tqdm(range(0, len(images), self.batch_size), desc="encode", leave=False, disable=len(images) < 500)
        ]
        return torch.cat(outs) * self.latent_scale

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """latents (N, C, h, w) -> images float (N, 3, H, W) in [-1, 1] on CPU (quantised by the VQ decoder)."""
        outs = [
            self.vq.decode(latents[i : i + self.batch_size].to(self.device) / self.latent_scale).sample.float().clamp(-1, 1).cpu()
            for i in range(0, len(latents), self.batch_size)
        ]
        return torch.cat(outs)

    def latent_shape(self, image_size: int) -> tuple[int, int, int]:
        factor = 2 ** (len(self.vq.config.block_out_channels) - 1)
        return (int(self.vq.config.latent_channels), image_size // factor, image_size // factor)


def file_digest(folder: Path) -> str:
    """Short hash of a model folder's file names, sizes and mtimes (cache key of encoded latents)."""
    parts = sorted(
        (str(p.relative_to(folder)), p.stat().st_size, int(p.stat().st_mtime)) for p in Path(folder).rglob("*") if p.is_file()
    )
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:12]


def cached_latents(path: Path, make: Any) -> torch.Tensor:
    """Load ``path`` (safetensors, key ``latents``) or build it with ``make()`` and write it atomically."""
    from safetensors.torch import load_file, save_file

    if path.is_file():
        return load_file(str(path))["latents"]
    latents = make().contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    save_file({"latents": latents}, str(tmp))
    os.replace(tmp, path)
    return latents


# ----------------------------------------------------------------------------------------------------------
# model.kind: ldm = the UNet2DModel functions of kind unet + an unclipped noise schedule
# ----------------------------------------------------------------------------------------------------------
def _ldm_scheduler(config: Any) -> Any:
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=config.num_train_timesteps,
        beta_schedule=config.beta_schedule,
        beta_start=config.beta_start,
        beta_end=config.beta_end,
        clip_sample=False,
    )


_unet = model_kind("unet")
register_model("ldm", ModelKind(build=_unet.build, load=_unet.load, save=_unet.save, scheduler=_ldm_scheduler))
