"""Shared torch helpers of the three published use cases (CIFAR-20, CelebA-HQ, ArtBench).

Everything here is small and explicit: local-path checks, device choice, image <-> tensor conversion,
the epsilon-prediction training loop, structured magnitude pruning of a ``UNet2DModel`` with torch-pruning,
deterministic DDIM sampling from noise seeds shared by all coalitions (common random numbers), and the
pruned-checkpoint format (config of the unpruned model + pruning ratio + safetensors state).

Paper notation (Lin et al., ICLR 2025) -> code names
----------------------------------------------------
- θ*  (full model trained on all contributors)          -> ``artifacts/full``
- θ~* (pruned θ*, then recovered on all contributors)   -> ``artifacts/pruned_recovered.safetensors``
- θ~_S (θ~* fine-tuned K steps on coalition S's data)  -> built in memory per ``evaluate`` call
- v(S) (property of images sampled from θ~_S)           -> ``EvalResult.values``
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm


# ----------------------------------------------------------------------------------------------------------
# Local files only
# ----------------------------------------------------------------------------------------------------------
def require_local_paths(paths: Mapping[str, str | os.PathLike | None], *, setting: str) -> None:
    """Fail once, listing every configured path that does not exist locally.

    Args:
        paths: config key -> path (``None`` values are skipped: optional keys left unset).
        setting: name of the use case, quoted in the message (e.g. ``"cifar20"``).

    Raises:
        FileNotFoundError: one line naming every missing ``key=path`` and how to fix it.
    """
    missing = [f"{key}={value}" for key, value in paths.items() if value is not None and not Path(value).exists()]
    if missing:
        raise FileNotFoundError(
            f"{setting}: {len(missing)} configured local path(s) do not exist: {', '.join(missing)}; "
            "nothing is downloaded at run time: copy the files there or point the keys at your local copies "
            "(see docs/usecases.md)"
        )


def resolve_device(name: str) -> torch.device:
    """``"auto"`` -> ``cuda`` when available else ``cpu``; ``"cpu"``/``"cuda"``/``"cuda:N"`` as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu" or name.startswith("cuda"):
        if name.startswith("cuda") and not torch.cuda.is_available():
            raise RuntimeError(f"device={name!r} but no CUDA device is visible; use device: auto or cpu")
        return torch.device(name)
    raise ValueError(f"device={name!r} is not valid; allowed: auto, cpu, cuda, cuda:N")


def autocast(device: torch.device, mixed_precision: str):
    """Autocast context for ``mixed_precision`` in {"no", "bf16", "fp16"}; a no-op on CPU."""
    if mixed_precision not in ("no", "bf16", "fp16"):
        raise ValueError(f"mixed_precision={mixed_precision!r} is not valid; allowed: no, bf16, fp16")
    if device.type != "cuda" or mixed_precision == "no":
        return torch.autocast(device_type="cpu", enabled=False)
    dtype = torch.bfloat16 if mixed_precision == "bf16" else torch.float16
    return torch.autocast(device_type="cuda", dtype=dtype)


# ----------------------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------------------
def uint8_to_model(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (N, C, H, W) in [0, 255] -> float32 in [-1, 1]."""
    return images.float().div(127.5).sub(1.0)


def model_to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float images (N, C, H, W) in [-1, 1] -> uint8 (N, C, H, W) on CPU."""
    return ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()


def resize_uint8(images: np.ndarray, size: int) -> np.ndarray:
    """Resize uint8 (N, H, W, 3) images to (N, size, size, 3) with a bicubic filter (PIL, as clean-fid)."""
    from PIL import Image

    if images.shape[1] == size and images.shape[2] == size:
        return images
    out = [np.asarray(Image.fromarray(img).resize((size, size), Image.BICUBIC)) for img in images]
    return np.stack(out)


def load_image_uint8(path: Path, size: int) -> np.ndarray:
    """Read one image file as RGB uint8 (size, size, 3); a corrupt file fails with its path."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB")
            if rgb.size != (size, size):
                rgb = rgb.resize((size, size), Image.BICUBIC)
            return np.asarray(rgb, dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"cannot read image {path}: {exc}; remove the file or fix the labels file") from exc


# ----------------------------------------------------------------------------------------------------------
# Seeds
# ----------------------------------------------------------------------------------------------------------
def torch_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch.Generator seeded with ``seed`` (reduced to 63 bits)."""
    g = torch.Generator(device=device)
    g.manual_seed(int(seed) % (2**63 - 1))
    return g


def shared_noise(n: int, shape: tuple[int, ...], *, noise_seed: int, replicate: int) -> torch.Tensor:
    """Initial sampling noise (n, *shape), identical for every coalition (common random numbers).

    Image i of replicate r always starts from the same noise: the seed is (noise_seed, r) only, never the job
    seed, so differences between coalitions are not drowned by sampling noise.
    """
    seed = int(np.random.SeedSequence([int(noise_seed), int(replicate)]).generate_state(1, dtype=np.uint64)[0])
    return torch.randn((n, *shape), generator=torch_generator(seed))


# ----------------------------------------------------------------------------------------------------------
# Training (epsilon prediction, the DDPM loss)
# ----------------------------------------------------------------------------------------------------------
def train_epsilon(
    model: torch.nn.Module,
    data: torch.Tensor,
    *,
    scheduler: Any,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    device: torch.device,
    mixed_precision: str = "bf16",
    forward: Callable[[torch.nn.Module, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    params: list[torch.nn.Parameter] | None = None,
    hflip: bool = False,
    desc: str = "train",
    progress: bool = True,
) -> dict[str, float]:
    """Train ``model`` for ``steps`` Adam steps on the DDPM epsilon loss.

    Args:
        model: a diffusers UNet (called as ``model(x_t, t).sample`` unless ``forward`` is given).
        data: training tensor (N, C, H, W), already in model space ([-1, 1] pixels or latents), on CPU.
        scheduler: a diffusers noise scheduler providing ``add_noise`` and ``config.num_train_timesteps``.
        steps: optimiser steps K (0 returns at once).
        batch_size: images per step, drawn with replacement (so a 1-image coalition trains like a big one).
        lr: Adam learning rate.
        seed: batch order, timesteps and noise derive from it (the job seed: coalition-specific).
        forward: optional ``f(model, x_t, t, idx) -> eps_pred`` (conditioning, e.g. text embeddings per index).
        params: the parameters to train (default: all that require grad).
        hflip: random horizontal flips (CIFAR recipe).

    Returns:
        ``{"loss_first": float, "loss_last": float}``, mean loss over the first and last 10% of steps.
    """
    if steps <= 0:
        return {"loss_first": float("nan"), "loss_last": float("nan")}
    if len(data) == 0:
        raise ValueError("train_epsilon: the coalition has no training images; check the contributors' data")
    g = torch_generator(seed)
    train_params = params if params is not None else [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(train_params, lr=lr)
    n_train = int(scheduler.config.num_train_timesteps)
    model.train()
    losses: list[float] = []
    for _ in tqdm(range(steps), desc=desc, disable=not progress, leave=False):
        # 1. a batch with replacement, its timesteps and noise, all from the job seed
        idx = torch.randint(0, len(data), (batch_size,), generator=g)
        x0 = data[idx]
        if hflip:
            flip = torch.rand(batch_size, generator=g) < 0.5
            x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
        noise = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, n_train, (batch_size,), generator=g)
        x0, noise, t = x0.to(device), noise.to(device), t.to(device)
        # 2. forward process q(x_t | x_0) and the epsilon loss
        x_t = scheduler.add_noise(x0, noise, t)
        with autocast(device, mixed_precision):
            pred = forward(model, x_t, t, idx) if forward is not None else model(x_t, t).sample
        loss = torch.nn.functional.mse_loss(pred.float(), noise)
        # 3. update
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    model.eval()
    tail = max(1, len(losses) // 10)
    return {"loss_first": float(np.mean(losses[:tail])), "loss_last": float(np.mean(losses[-tail:]))}


# ----------------------------------------------------------------------------------------------------------
# Sampling (DDIM, deterministic with eta = 0)
# ----------------------------------------------------------------------------------------------------------
@torch.no_grad()
def sample_ddim(
    model: torch.nn.Module,
    scheduler_config: Mapping[str, Any],
    noise: torch.Tensor,
    *,
    steps: int,
    batch_size: int,
    device: torch.device,
    mixed_precision: str = "bf16",
    predict: Callable[[torch.nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Run DDIM (eta = 0) from the given initial noise; returns x_0 (N, C, H, W) float on CPU.

    ``predict(model, x_t, t) -> eps`` overrides the plain ``model(x_t, t).sample`` call (used for
    classifier-free guidance with a text-conditioned UNet).
    """
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(dict(scheduler_config))
    scheduler.set_timesteps(steps)
    model.eval()
    outs = []
    for start in tqdm(range(0, len(noise), batch_size), desc="sample", disable=not progress, leave=False):
        x = noise[start : start + batch_size].to(device)
        for t in scheduler.timesteps:
            with autocast(device, mixed_precision):
                eps = predict(model, x, t) if predict is not None else model(x, t).sample
            x = scheduler.step(eps.float(), t, x, eta=0.0).prev_sample
        outs.append(x.float().cpu())
    return torch.cat(outs)


# ----------------------------------------------------------------------------------------------------------
# Structured magnitude pruning of a UNet2DModel (torch-pruning)
# ----------------------------------------------------------------------------------------------------------
def prune_unet2d(model: torch.nn.Module, *, ratio: float, example: torch.Tensor) -> torch.nn.Module:
    """Prune channels of a diffusers ``UNet2DModel`` in place by L2 magnitude; returns the model.

    The output conv stays untouched; GroupNorm groups and single-head attention stay consistent (the torch-
    pruning dependency graph handles them); ``Upsample2D``/``Downsample2D`` bookkeeping attributes are fixed
    afterwards. Deterministic: the same weights and ratio always give the same structure.

    Args:
        ratio: fraction of channels removed per prunable group (the paper: 0.3).
        example: one input batch (B, C, H, W) for tracing.
    """
    import torch_pruning as tp
    from diffusers.models.downsampling import Downsample2D
    from diffusers.models.upsampling import Upsample2D

    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"prune ratio={ratio} is not valid; allowed: 0 <= ratio < 1")
    if ratio == 0.0:
        return model
    model.eval()
    example_inputs = {"sample": example, "timestep": torch.ones(example.shape[0], dtype=torch.long)}
    pruner = tp.pruner.MetaPruner(
        model,
        example_inputs,
        importance=tp.importance.MagnitudeImportance(p=2),
        pruning_ratio=ratio,
        ignored_layers=[model.conv_out],
    )
    for group in pruner.step(interactive=True):
        group.prune()
    for module in model.modules():
        if isinstance(module, (Upsample2D, Downsample2D)) and getattr(module, "conv", None) is not None:
            conv = module.conv
            module.channels = conv.in_channels
            module.out_channels = conv.out_channels
    return model


def n_params(model: torch.nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


# ----------------------------------------------------------------------------------------------------------
# Checkpoints: safetensors + JSON only, never pickles
# ----------------------------------------------------------------------------------------------------------
def save_state(model: torch.nn.Module, path: Path, meta: Mapping[str, Any] | None = None) -> None:
    """Write the model's state dict to ``path`` (safetensors) atomically, with JSON metadata beside it."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(tmp))
    os.replace(tmp, path)
    if meta is not None:
        write_json(path.with_suffix(".json"), meta)


def load_state(model: torch.nn.Module, path: Path) -> torch.nn.Module:
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(path)))
    return model


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


def config_hash(obj: Any) -> str:
    """Short stable hash of a JSON-able object (used to skip prepare steps whose inputs did not change)."""
    import hashlib

    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def step_done(marker: Path, digest: str) -> bool:
    """True when ``marker`` exists and records ``digest`` (the prepare step ran with the same inputs)."""
    return marker.exists() and read_json(marker).get("hash") == digest


def mark_done(marker: Path, digest: str, **info: Any) -> None:
    write_json(marker, {"hash": digest, **info})
