"""Steps 4-5 of every evaluation, shared by prepare and the game: sample from the shared noise, decode,
extract features once and compute every configured property; and PNG grids of generated images.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from contribshap.pipeline.contracts.io import atomic_write_bytes
from contribshap.workers.backends import Backend
from contribshap.workers.properties.base import Reference, compute_properties
from contribshap.workers.properties.extractors import Extractor
from contribshap.workers.sampling import sample_images

if TYPE_CHECKING:
    from contribshap.pipeline.config.diffusion import DiffusionGameConfig

__all__ = ["SAMPLE_GRID_IMAGES", "generate", "generate_samples", "image_grid_png", "measure_model", "save_sample_grid"]

#: Images kept in the sample grid of the full / empty coalition (the first ones of the shared noise).
SAMPLE_GRID_IMAGES = 64


def generate_samples(config: DiffusionGameConfig, backend: Backend, model: torch.nn.Module, *, replicate: int, device: torch.device,
                     n_images: int | None = None) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """Step 4: ``n_images`` (default ``sampling.n_images``) samples of the sampling model ``model``, decoded.

    Returns:
        (samples float32 (n_images, C, h, w) in the model's space, images float32 (n_images, C', H, W) in
        [-1, 1], ``{"sample_s", "decode_s"}``), tensors on CPU. For pixel backends samples are the images.
    """
    sampling = config.sampling if n_images is None else config.sampling.model_copy(update={"n_images": n_images})
    samples, timings = sample_images(model, backend.noise_scheduler, sampling, replicate=replicate, device=device,
                                     image_shape=backend.sample_shape, clamp=backend.clamp, precision=config.precision)
    start = time.perf_counter()
    images = backend.decode(samples)
    timings["decode_s"] = time.perf_counter() - start
    timings["sample_s"] += timings["decode_s"]
    return samples, images, timings


def generate(config: DiffusionGameConfig, backend: Backend, model: torch.nn.Module, *, replicate: int, device: torch.device,
             n_images: int | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """:func:`generate_samples` without the model-space samples: (images (n_images, C, H, W) in [-1, 1], timings)."""
    _, images, timings = generate_samples(config, backend, model, replicate=replicate, device=device, n_images=n_images)
    return images, timings


def measure_model(
    config: DiffusionGameConfig,
    backend: Backend,
    model: torch.nn.Module,
    extractor: Extractor,
    reference: Reference,
    *,
    replicate: int,
    device: torch.device,
    on_images: Callable[[torch.Tensor], None] | None = None,
) -> tuple[dict[str, float], dict[str, float]]:
    """Steps 4-5: sample with the shared noise, decode, compute every configured property: (values, timings).

    ``on_images`` (optional) is called once with the generated images, float32 (n_images, C, H, W) in [-1, 1].
    """
    images, timings = generate(config, backend, model, replicate=replicate, device=device)
    if on_images is not None:
        on_images(images)
    start = time.perf_counter()
    values = compute_properties(list(config.properties), extractor(images), reference)
    timings["eval_s"] = time.perf_counter() - start
    return values, timings


def image_grid_png(images: torch.Tensor, *, columns: int, tile: int | None = None) -> bytes:
    """PNG bytes of ``images`` laid out in rows of ``columns`` tiles with a 2-pixel white gap.

    Args:
        images: float (k, C, H, W) in [-1, 1], C = 1 (grey) or 3 (RGB), k >= 1.
        columns: tiles per row. tile: tile side in pixels (default: H scaled by an integer factor to at
            least 40 px for tiny images, at most 96 px for large ones).

    Example::

        png = image_grid_png(torch.zeros(8, 1, 8, 8), columns=4)  # a 4 x 2 grid of 48-px grey tiles
    """
    from PIL import Image

    pixels = ((images.detach().float().clamp(-1, 1).cpu().numpy() + 1.0) * 127.5).round().astype(np.uint8)
    k, channels, height, width = pixels.shape
    if channels not in (1, 3):
        raise ValueError(f"images have {channels} channels; a grid needs 1 (grey) or 3 (RGB), decode latents first")
    if tile is None:
        tile = height * max(1, -(-40 // height)) if height < 40 else min(height, 96)
    size = (tile, max(1, round(width * tile / height)))
    rows, gap = -(-k // columns), 2
    mode = "L" if channels == 1 else "RGB"
    canvas = Image.new(mode, (columns * (size[1] + gap) - gap, rows * (size[0] + gap) - gap), 255 if channels == 1 else (255, 255, 255))
    resample = Image.Resampling.NEAREST if tile >= height else Image.Resampling.LANCZOS
    for index, image in enumerate(pixels):
        array = image[0] if channels == 1 else image.transpose(1, 2, 0)
        picture = Image.fromarray(array, mode=mode).resize((size[1], size[0]), resample)
        row, column = divmod(index, columns)
        canvas.paste(picture, (column * (size[1] + gap), row * (size[0] + gap)))
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def save_sample_grid(images: torch.Tensor, path: Path, *, n_images: int = SAMPLE_GRID_IMAGES) -> Path:
    """Write the first ``n_images`` of ``images`` (float (k, C, H, W) in [-1, 1]) as a square-ish PNG grid,
    atomically (a reader never sees half a file); returns ``path``."""
    shown = images[:n_images]
    columns = max(1, int(np.ceil(np.sqrt(len(shown)))))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(Path(path), image_grid_png(shown, columns=columns))
    return Path(path)


