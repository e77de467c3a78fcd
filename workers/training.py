"""One training loop for every stage: full training θ*, recovery, per-coalition fine-tuning, retraining.

The loss is DDPM's simplified objective (Ho et al. 2020, eq. 14)::

    L(θ) = E_{x0, t, ε} || ε - ε_θ( sqrt(ᾱ_t) x0 + sqrt(1 - ᾱ_t) ε, t ) ||²

code names -> paper symbols: ``clean`` = x0, ``noise`` = ε, ``timesteps`` = t, ``noisy`` = x_t,
``noise_scheduler.add_noise`` = the forward process q(x_t | x0), ``model(noisy, timesteps).sample`` = ε_θ.

Everything random (batch indices, timesteps, noise) comes from one ``torch.Generator`` seeded by ``seed``,
so the same data + seed gives the same weights (on the same device and thread count).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F


@dataclass
class TrainStats:
    """What a training stage did: ``steps``, ``seconds``, ``final_loss`` (mean of the last 10% of steps), ``losses``."""

    steps: int
    seconds: float
    final_loss: float
    losses: list[float] = field(default_factory=list)


def resolve_device(device: str) -> torch.device:
    """``auto`` -> cuda when available else cpu; ``cpu``; ``cuda`` (an error when no GPU is visible)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda but torch sees no GPU; set device: auto or cpu")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device={device!r} is unknown; valid: ['auto', 'cpu', 'cuda']")
    return torch.device(device)


class EMA:
    """Exponential moving average of a model's floating-point parameters: θ_ema <- d θ_ema + (1 - d) θ."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items() if v.dtype.is_floating_point}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for key, value in model.state_dict().items():
            if key in self.shadow:
                self.shadow[key].mul_(self.decay).add_(value.detach(), alpha=1.0 - self.decay)

    @torch.no_grad()
    def copy_to(self, model: torch.nn.Module) -> None:
        state = model.state_dict()
        for key, value in self.shadow.items():
            state[key].copy_(value)


def train(
    model: torch.nn.Module,
    noise_scheduler: Any,
    images: torch.Tensor,
    optim: Any,
    *,
    seed: int,
    device: torch.device,
    precision: str = "fp32",
    steps: int | None = None,
    lr: float | None = None,
    progress: str | None = None,
) -> TrainStats:
    """Train ``model`` in place on ``images`` with the DDPM loss.

    Args:
        model: the denoiser ε_θ (already on ``device``).
        noise_scheduler: a diffusers ``DDPMScheduler`` (forward process and ``num_train_timesteps``).
        images: float tensor (N, C, H, W) in [-1, 1], N >= 1 (on any device).
        optim: an ``OptimConfig`` section (steps, lr, batch_size, weight_decay, warmup_steps, ema_decay).
        seed: seed of batches, timesteps and noise.
        device: where to train. precision: ``fp32`` | ``fp16`` | ``bf16`` (mixed precision, CUDA only).
        steps / lr: override ``optim.steps`` / ``optim.lr`` (used for ``retrain``).
        progress: stage name of the progress display, or None for none: inside a task that collects
            progress (``contribshap.pipeline.dispatch.tasks.report_progress``) the steps go to the driver's bar,
            otherwise a tqdm bar is shown here.

    Returns:
        TrainStats. With ``optim.ema_decay`` set, the model ends with the EMA weights.
    """
    from contribshap.pipeline.contracts.progress import report_progress
    from tqdm.auto import tqdm

    n_steps = optim.steps if steps is None else steps
    learning_rate = optim.lr if lr is None else lr
    if len(images) == 0:
        raise ValueError("cannot train on an empty image set; the coalition owns no images")
    if n_steps == 0:
        return TrainStats(steps=0, seconds=0.0, final_loss=float("nan"))

    # 1. Data on the device, one generator for all randomness, optimiser (+ accelerate on GPU).
    start = time.perf_counter()
    data = images.to(device)
    generator = torch.Generator(device="cpu").manual_seed(int(seed) % (2**63))
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=optim.weight_decay)
    accelerator = None
    if device.type == "cuda" and precision != "fp32":
        from accelerate import Accelerator

        accelerator = Accelerator(mixed_precision=precision, cpu=False)
        model, optimizer = accelerator.prepare(model, optimizer)
    ema = EMA(model, optim.ema_decay) if optim.ema_decay else None
    n_timesteps = noise_scheduler.config.num_train_timesteps
    model.train()

    # 2. The loop (progress: to the driver when a task collects it, else a local bar).
    losses: list[float] = []
    to_driver = progress is not None and report_progress(progress, 0, n_steps)
    bar = tqdm(range(n_steps), desc=progress, disable=progress is None or to_driver, leave=False, mininterval=1.0)
    for step in bar:
        if optim.warmup_steps:
            for group in optimizer.param_groups:
                group["lr"] = learning_rate * min(1.0, (step + 1) / optim.warmup_steps)
        index = torch.randint(0, len(data), (optim.batch_size,), generator=generator)
        clean = data[index.to(device)]
        noise = torch.randn(clean.shape, generator=generator).to(device)
        timesteps = torch.randint(0, n_timesteps, (len(clean),), generator=generator).to(device)
        noisy = noise_scheduler.add_noise(clean, noise, timesteps)
        if accelerator is not None:
            with accelerator.autocast():
                loss = F.mse_loss(model(noisy, timesteps).sample.float(), noise)
            accelerator.backward(loss)
        else:
            loss = F.mse_loss(model(noisy, timesteps).sample, noise)
            loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update(model)
        losses.append(float(loss.detach()))
        if to_driver:
            report_progress(progress, step + 1, n_steps)

    # 3. EMA weights in, back to eval mode.
    if accelerator is not None:
        model = accelerator.unwrap_model(model)
    if ema is not None:
        ema.copy_to(model)
    model.eval()
    tail = losses[-max(1, n_steps // 10) :]
    return TrainStats(steps=n_steps, seconds=time.perf_counter() - start, final_loss=sum(tail) / len(tail), losses=losses)
