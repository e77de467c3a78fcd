"""Batched DDIM / DDPM sampling from fixed noise seeds (common random numbers across coalitions).

Every coalition draws its initial noise x_T from the same generator seed (``sampling.noise_seed +
replicate``), so two coalitions' images differ only because their models differ. With DDIM (eta = 0) the
whole trajectory is then deterministic; DDPM's per-step noise is drawn from the same seeded generator.
One loop for every backend: pixel samples are clamped to [-1, 1], latents are not (the decoder maps them).

Code names -> paper symbols (Song et al. 2021, DDIM eq. 12): ``x`` = x_t, ``eps`` = ε_θ(x_t, t),
``scheduler.step(...).prev_sample`` = x_{t-1} (DDIM with σ_t = 0, or DDPM's ancestral step).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import torch


def initial_noise(n_images: int, shape: tuple[int, int, int], *, seed: int) -> torch.Tensor:
    """x_T for ``n_images`` images of ``shape`` (C, H, W): float32 (n_images, C, H, W), on CPU, from ``seed``.

    The noise of image i does not depend on ``n_images`` beyond i (it is drawn in one block), and never on
    the coalition: this is the common-random-numbers contract.
    """
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randn((n_images, *shape), generator=generator)


def make_sampler(noise_scheduler: Any, sampling: Any) -> Any:
    """The inference scheduler: ``ddim`` (eta 0) or ``ddpm``, sharing the training noise schedule."""
    from diffusers import DDIMScheduler, DDPMScheduler

    if sampling.scheduler == "ddim":
        sampler = DDIMScheduler.from_config(noise_scheduler.config)
        sampler.set_timesteps(sampling.steps)
    elif sampling.scheduler == "ddpm":
        sampler = DDPMScheduler.from_config(noise_scheduler.config)
        sampler.set_timesteps(noise_scheduler.config.num_train_timesteps)
    else:
        raise ValueError(f"sampling.scheduler={sampling.scheduler!r} is unknown; valid: ['ddim', 'ddpm']")
    return sampler


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Autocast for ``precision`` in {"fp32", "fp16", "bf16"}; mixed precision on CUDA only (else a no-op)."""
    if precision not in ("fp32", "fp16", "bf16"):
        raise ValueError(f"precision={precision!r} is unknown; valid: ['fp32', 'fp16', 'bf16']")
    if device.type != "cuda" or precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


@torch.no_grad()
def sample_images(
    model: torch.nn.Module,
    noise_scheduler: Any,
    sampling: Any,
    *,
    replicate: int = 0,
    device: torch.device,
    image_shape: tuple[int, int, int],
    clamp: bool = True,
    precision: str = "fp32",
) -> tuple[torch.Tensor, dict[str, float]]:
    """Generate ``sampling.n_images`` samples with ``model``: pixels, or latents for a latent backend.

    Args:
        model: the denoiser ε_θ (on ``device``), called as ``model(x_t, t).sample`` with ``t`` long (B,).
        noise_scheduler: the training ``DDPMScheduler`` (its config defines the noise schedule).
        sampling: the ``sampling`` config section (scheduler, steps, n_images, batch_size, noise_seed).
        replicate: shifts the noise seed (``noise_seed + replicate``); coalitions share it.
        device: where to run. image_shape: (C, H, W) of one sample (the model's space).
        clamp: clamp x_0 to [-1, 1] (pixel space; latents are left as they are).
        precision: ``fp32`` | ``fp16`` | ``bf16`` (autocast of the model call, CUDA only).

    Returns:
        (samples, timings): float32 tensor (n_images, C, H, W) on CPU and ``{"sample_s": seconds}``.
    """
    start = time.perf_counter()
    model.eval()
    seed = sampling.noise_seed + replicate

    # 1. Common random numbers: all initial noise from one seed, independent of the coalition.
    noise = initial_noise(sampling.n_images, image_shape, seed=seed)
    step_generator = torch.Generator(device="cpu").manual_seed(seed + 1)

    # 2. One scheduler, the same timesteps for every batch.
    sampler = make_sampler(noise_scheduler, sampling)

    # 3. Denoise batch by batch: x_T -> x_0.
    outputs = []
    for begin in range(0, sampling.n_images, sampling.batch_size):
        x = noise[begin : begin + sampling.batch_size].to(device)
        for t in sampler.timesteps:
            timestep = torch.full((len(x),), int(t), device=device, dtype=torch.long)
            with autocast(device, precision):
                eps = model(x, timestep).sample
            eps = eps.float()
            if sampling.scheduler == "ddpm":
                x = sampler.step(eps, t, x, generator=step_generator).prev_sample
            else:
                x = sampler.step(eps, t, x, eta=0.0).prev_sample
        outputs.append((x.clamp(-1.0, 1.0) if clamp else x).float().cpu())

    # 4. Back to CPU, one tensor.
    return torch.cat(outputs), {"sample_s": time.perf_counter() - start}
