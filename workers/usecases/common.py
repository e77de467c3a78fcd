"""Small torch helpers shared by the latent use cases (CelebA-HQ LDM, ArtBench SD-LoRA).

- :func:`sample_latents`: deterministic DDIM (eta = 0) in latent space from the shared initial noise
  (common random numbers), without the final clamp to [-1, 1] that pixel sampling applies.
- :func:`stage`: an idempotent prepare step: build into a temporary folder, write ``done.json``, rename.

Code names -> paper symbols (Song et al. 2021, DDIM eq. 12): ``x`` = z_t, ``eps`` = ε_θ(z_t, t),
``sampler.step(...).prev_sample`` = z_{t-1} with σ_t = 0.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

DONE_NAME = "done.json"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Autocast for ``precision`` in {"fp32", "fp16", "bf16"}; mixed precision on CUDA only."""
    if precision not in ("fp32", "fp16", "bf16"):
        raise ValueError(f"precision={precision!r} is not valid; allowed: fp32, fp16, bf16")
    if device.type != "cuda" or precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


@torch.no_grad()
def sample_latents(
    model: torch.nn.Module,
    scheduler_config: Mapping[str, Any],
    noise: torch.Tensor,
    *,
    steps: int,
    batch_size: int,
    device: torch.device,
    precision: str = "fp32",
) -> tuple[torch.Tensor, float]:
    """DDIM (eta = 0) from ``noise`` (N, C, h, w); returns (z_0 float32 (N, C, h, w) on CPU, seconds).

    Args:
        model: called as ``model(z_t, t).sample`` with ``t`` a long tensor (B,) (a UNet2DModel, or
            :class:`contribshap.workers.usecases.artbench.Guided` for classifier-free guidance).
        scheduler_config: the training noise scheduler's config (its betas define the DDIM schedule).
        steps: DDIM steps. batch_size: latents per forward. precision: fp32 | fp16 | bf16 (CUDA only).
    """
    from diffusers import DDIMScheduler

    start = time.perf_counter()
    sampler = DDIMScheduler.from_config(dict(scheduler_config))
    sampler.set_timesteps(steps)
    model.eval()
    outs = []
    for begin in range(0, len(noise), batch_size):
        x = noise[begin : begin + batch_size].to(device)
        for t in sampler.timesteps:
            timestep = torch.full((len(x),), int(t), device=device, dtype=torch.long)
            with autocast(device, precision):
                eps = model(x, timestep).sample
            x = sampler.step(eps.float(), t, x, eta=0.0).prev_sample
        outs.append(x.float().cpu())
    return torch.cat(outs), time.perf_counter() - start


def stage(folder: Path, make: Callable[[Path], dict[str, Any]]) -> dict[str, Any]:
    """Run ``make(tmp_folder) -> summary`` unless ``folder/done.json`` exists; returns the summary.

    The artifact is built in ``.<name>.tmp-<pid>`` next to ``folder`` and renamed when complete, so a killed
    prepare never leaves a half artifact under the final name; ``reused`` says whether it already existed.
    """
    folder = Path(folder)
    done = folder / DONE_NAME
    if done.is_file():
        return {**json.loads(done.read_text()), "reused": True}
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    start = time.perf_counter()
    summary = {**make(tmp), "seconds": round(time.perf_counter() - start, 3)}
    (tmp / DONE_NAME).write_text(json.dumps(summary, indent=1, default=str))
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    return {**summary, "reused": False}
