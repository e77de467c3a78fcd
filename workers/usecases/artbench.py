"""ArtBench Post-Impressionism (the paper's aesthetic-quality setting): artists as contributors, SD 1.x + LoRA.

Data: an ArtBench-10 style folder. The artist of a painting comes from ``metadata_csv`` (ArtBench-10.csv:
``name``, ``artist``, ``label`` = style) or, without it, from the file name ``<artist>_<title>.jpg``.
Every image is captioned with the same ``data.prompt``.

Model (``model.kind: sd_lora``): a Stable Diffusion 1.x pipeline from a local folder (``unet/``, ``vae/``,
``text_encoder/``, ``tokenizer/``, ``scheduler/``). The denoiser is the frozen base UNet plus a LoRA (peft)
on the attention projections; only LoRA weights are trained, saved and loaded (safetensors).

LoRA-rank pruning (θ* -> θ~*): for LoRA layer m with down-projection A_m (r x d_in), up-projection
B_m (d_out x r) and scale s_m = alpha_m / r_m, the update is ΔW_m = s_m Σ_i B_m[:, i] A_m[i, :]. Rank
component i has magnitude ||ΔW_m,i||_F = s_m ||B_m[:, i]|| ||A_m[i, :]||. All components of all layers are
ranked together and the highest are kept until ``1 - prune.ratio`` of them are kept (at least one per
layer); the kept layer ranks become peft's ``rank_pattern`` and ``alpha_pattern`` keeps every s_m, so the
pruned LoRA is an exact truncation of the full one. The null model is the base pipeline without LoRA.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from contribshap.pipeline.games import Contributor
from contribshap.workers.data import ContributorDataset, register_source
from contribshap.workers.models import ModelKind, register_model
from contribshap.workers.usecases.celebahq import read_images

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
LORA_NAME = "lora.safetensors"
LORA_CONFIG_NAME = "lora.json"


# ----------------------------------------------------------------------------------------------------------
# Data: ArtBench folder (+ optional metadata CSV)
# ----------------------------------------------------------------------------------------------------------
def artist_from_filename(path: Path) -> str:
    """ArtBench names files ``<artist>_<title>.jpg`` (e.g. ``vincent-van-gogh_the-starry-night.jpg``)."""
    return path.stem.split("_", 1)[0]


def read_artbench_index(config: Any) -> tuple[list[Path], np.ndarray, list[str]]:
    """Files, owner int64 (N,) indexing ``artists``, and artists (sorted ids) of ``data.source: artbench``."""
    root = Path(config.root).expanduser()
    base = root / config.style if config.style and (root / config.style).is_dir() else root
    pairs: list[tuple[Path, str]] = []
    if config.metadata_csv is not None:
        csv_path = Path(config.metadata_csv).expanduser()
        with csv_path.open(newline="") as handle:
            reader = csv.DictReader(handle)
            columns = set(reader.fieldnames or [])
            name_col = "name" if "name" in columns else "file"
            if name_col not in columns or "artist" not in columns:
                raise ValueError(f"{csv_path} needs the columns name (or file) and artist; found {sorted(columns)}")
            for row in reader:
                if config.style and "label" in columns and row["label"] != config.style:
                    continue
                path = base / row[name_col]
                pairs.append((path if path.exists() else root / row[name_col], row["artist"]))
    else:
        files = sorted(p for p in base.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        pairs = [(p, artist_from_filename(p)) for p in files]
    if not pairs:
        raise ValueError(f"data.root: no images found under {base} (style={config.style!r}); check data.root and data.style")

    counts: dict[str, int] = {}
    for _, artist in pairs:
        counts[artist] = counts.get(artist, 0) + 1
    if config.artists is not None:
        unknown = sorted(set(config.artists) - set(counts))
        if unknown:
            raise ValueError(f"data.artists {unknown} have no images under {base}; check the names")
        artists = sorted(config.artists)
    else:
        artists = sorted(a for a, k in counts.items() if k >= config.min_images)
    if not artists:
        raise ValueError(f"no artist has >= data.min_images={config.min_images} images under {base}")
    position = {a: j for j, a in enumerate(artists)}
    files, owner, taken = [], [], dict.fromkeys(artists, 0)
    for path, artist in pairs:
        if artist in position and (config.max_per_artist is None or taken[artist] < config.max_per_artist):
            files.append(path)
            owner.append(position[artist])
            taken[artist] += 1
    return files, np.asarray(owner, dtype=np.int64), artists


@register_source("artbench")
def load_artbench(config: Any) -> ContributorDataset:
    """``data.source: artbench`` -> pixels in [-1, 1]; contributor ids ``artist-<name>``; prompts as conditioning."""
    files, owner, artists = read_artbench_index(config)
    contributors = [
        Contributor(f"artist-{a}", a.replace("-", " ").title(), int((owner == j).sum())) for j, a in enumerate(artists)
    ]
    return ContributorDataset(
        images=read_images(files, config.image_size, desc="artbench images"),
        contributor_index=torch.from_numpy(owner),
        contributors=contributors,
        conditioning=[config.prompt] * len(files),
    )


# ----------------------------------------------------------------------------------------------------------
# Stable Diffusion components from a local folder
# ----------------------------------------------------------------------------------------------------------
@dataclass
class SDComponents:
    """The parts of a local SD 1.x folder this setting uses (VAE and text encoder stay frozen)."""

    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: Any
    scheduler_config: dict[str, Any]


def load_sd_components(folder: str | Path, *, device: torch.device | str = "cpu") -> SDComponents:
    """Load unet / vae / text_encoder / tokenizer / scheduler config from ``folder`` (local files only)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    folder = Path(folder).expanduser()
    missing = [str(folder / sub) for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler") if not (folder / sub).exists()]
    if missing:
        raise FileNotFoundError(f"model.pipeline: {folder} lacks {missing}; copy a Stable Diffusion 1.x folder (diffusers layout) there")
    scheduler_config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    if scheduler_config.get("prediction_type", "epsilon") != "epsilon":
        raise ValueError(
            f"model.pipeline: {folder} predicts {scheduler_config['prediction_type']!r}; this setting needs an SD 1.x "
            "(epsilon-prediction) pipeline"
        )
    unet = UNet2DConditionModel.from_pretrained(str(folder / "unet"), local_files_only=True)
    vae = AutoencoderKL.from_pretrained(str(folder / "vae"), local_files_only=True)
    text_encoder = CLIPTextModel.from_pretrained(str(folder / "text_encoder"), local_files_only=True)
    tokenizer = CLIPTokenizer.from_pretrained(str(folder / "tokenizer"), local_files_only=True)
    for module in (unet, vae, text_encoder):
        module.requires_grad_(False)
        module.to(device).eval()
    return SDComponents(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler_config=scheduler_config)


def noise_scheduler(parts: SDComponents) -> Any:
    """The training ``DDPMScheduler`` with the pipeline's noise schedule (SD: scaled_linear, unclipped)."""
    from diffusers import DDPMScheduler

    config = {k: v for k, v in parts.scheduler_config.items() if not k.startswith("_")}
    config["clip_sample"] = False
    return DDPMScheduler.from_config(config)


@torch.no_grad()
def encode_prompt(parts: SDComponents, prompt: str, *, device: torch.device | str = "cpu") -> torch.Tensor:
    """CLIP text embeddings (1, L, D) of ``prompt`` padded to the tokenizer's max length."""
    ids = parts.tokenizer(prompt, padding="max_length", max_length=parts.tokenizer.model_max_length,
                          truncation=True, return_tensors="pt").input_ids
    return parts.text_encoder(ids.to(device))[0].float()


class VAECodec:
    """Encode images to SD latents (posterior mean x scaling_factor) and decode latents back to [-1, 1]."""

    def __init__(self, vae: torch.nn.Module, *, device: torch.device | str = "cpu", batch_size: int = 8) -> None:
        self.vae, self.device, self.batch_size = vae, torch.device(device), batch_size
        self.scale = float(vae.config.scaling_factor)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        outs = [self.vae.encode(images[i : i + self.batch_size].to(self.device)).latent_dist.mean.float().cpu()
                for i in range(0, len(images), self.batch_size)]
        return torch.cat(outs) * self.scale

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        outs = [self.vae.decode(latents[i : i + self.batch_size].to(self.device) / self.scale).sample.float().clamp(-1, 1).cpu()
                for i in range(0, len(latents), self.batch_size)]
        return torch.cat(outs)

    def latent_shape(self, image_size: int) -> tuple[int, int, int]:
        factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        return (int(self.vae.config.latent_channels), image_size // factor, image_size // factor)


# ----------------------------------------------------------------------------------------------------------
# Text-conditioned denoisers with the (x_t, t) -> .sample interface of the shared training loop
# ----------------------------------------------------------------------------------------------------------
class TextConditioned(torch.nn.Module):
    """ε_θ(x_t, t, c) for one fixed prompt embedding c: ``forward(x, t)`` returns the UNet output (``.sample``)."""

    def __init__(self, unet: torch.nn.Module, cond: torch.Tensor) -> None:
        super().__init__()
        self.unet = unet
        self.register_buffer("cond", cond, persistent=False)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> Any:
        return self.unet(x, t, encoder_hidden_states=self.cond.expand(len(x), -1, -1).to(x.dtype))


class Guided(torch.nn.Module):
    """Classifier-free guidance: ε = ε(x, t, ∅) + g (ε(x, t, c) - ε(x, t, ∅)); ``forward`` returns ``.sample``."""

    def __init__(self, unet: torch.nn.Module, cond: torch.Tensor, uncond: torch.Tensor, guidance_scale: float) -> None:
        super().__init__()
        self.unet, self.guidance_scale = unet, float(guidance_scale)
        self.register_buffer("cond", cond, persistent=False)
        self.register_buffer("uncond", uncond, persistent=False)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> Any:
        from types import SimpleNamespace

        n = len(x)
        if self.guidance_scale == 1.0:
            return self.unet(x, t, encoder_hidden_states=self.cond.expand(n, -1, -1))
        context = torch.cat([self.uncond.expand(n, -1, -1), self.cond.expand(n, -1, -1)])
        t2 = t.repeat(2) if torch.is_tensor(t) and t.ndim == 1 else t
        eps_uncond, eps_cond = self.unet(torch.cat([x, x]), t2, encoder_hidden_states=context).sample.chunk(2)
        return SimpleNamespace(sample=eps_uncond + self.guidance_scale * (eps_cond - eps_uncond))


# ----------------------------------------------------------------------------------------------------------
# LoRA: add, read, write, prune
# ----------------------------------------------------------------------------------------------------------
def lora_config(rank: int, alpha: float, target_modules: list[str], *, rank_pattern: dict[str, int] | None = None,
                alpha_pattern: dict[str, float] | None = None) -> Any:
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=alpha, target_modules=list(target_modules), init_lora_weights=True,
                      rank_pattern=dict(rank_pattern or {}), alpha_pattern=dict(alpha_pattern or {}))


def lora_layers(unet: torch.nn.Module, adapter: str) -> dict[str, torch.nn.Module]:
    """Module name -> LoRA-wrapped layer carrying ``adapter`` (peft ``LoraLayer``)."""
    return {name: m for name, m in unet.named_modules() if hasattr(m, "lora_A") and adapter in getattr(m, "lora_A", {})}


def lora_state(unet: torch.nn.Module, adapter: str) -> dict[str, torch.Tensor]:
    """The adapter's weights on CPU: ``<module>.A`` (r, d_in) and ``<module>.B`` (d_out, r)."""
    state = {}
    for name, layer in lora_layers(unet, adapter).items():
        state[f"{name}.A"] = layer.lora_A[adapter].weight.detach().float().cpu().clone()
        state[f"{name}.B"] = layer.lora_B[adapter].weight.detach().float().cpu().clone()
    return state


@torch.no_grad()
def set_lora_state(unet: torch.nn.Module, adapter: str, state: dict[str, torch.Tensor]) -> None:
    """Copy ``state`` (as written by :func:`lora_state`) into the adapter; shapes must match."""
    layers = lora_layers(unet, adapter)
    expected = {f"{n}.{ab}" for n in layers for ab in ("A", "B")}
    if set(state) != expected:
        raise ValueError(f"LoRA state does not match adapter {adapter!r}: {len(set(state) ^ expected)} keys differ; re-run prepare")
    for name, layer in layers.items():
        layer.lora_A[adapter].weight.copy_(state[f"{name}.A"])
        layer.lora_B[adapter].weight.copy_(state[f"{name}.B"])


def lora_scale(layer: torch.nn.Module, adapter: str) -> float:
    return float(layer.scaling[adapter])


def rank_magnitudes(unet: torch.nn.Module, adapter: str) -> dict[str, np.ndarray]:
    """||ΔW_m,i||_F = s_m ||B_m[:, i]|| ||A_m[i, :]|| for every LoRA layer m and rank component i."""
    out = {}
    for name, layer in lora_layers(unet, adapter).items():
        a = layer.lora_A[adapter].weight.detach().float()
        b = layer.lora_B[adapter].weight.detach().float()
        out[name] = (lora_scale(layer, adapter) * b.norm(dim=0) * a.norm(dim=1)).cpu().numpy()
    return out


def select_ranks(magnitudes: dict[str, np.ndarray], kept_fraction: float) -> dict[str, np.ndarray]:
    """Indices of the rank components kept per layer: the globally largest until ``kept_fraction`` are kept.

    Every layer keeps at least its largest component. Ties are broken by layer name and index (stable).
    """
    if not 0.0 < kept_fraction <= 1.0:
        raise ValueError(f"kept fraction {kept_fraction} is not valid; allowed: 0 < kept <= 1 (kept = 1 - prune.ratio)")
    names = sorted(magnitudes)
    total = sum(len(magnitudes[n]) for n in names)
    budget = max(len(names), math.ceil(kept_fraction * total))
    keep: dict[str, set[int]] = {n: {int(np.argmax(magnitudes[n]))} for n in names}
    ranked = sorted((-float(magnitudes[n][i]), n, i) for n in names for i in range(len(magnitudes[n])))
    kept = len(names)
    for _, n, i in ranked:
        if kept >= budget:
            break
        if i not in keep[n]:
            keep[n].add(i)
            kept += 1
    return {n: np.asarray(sorted(keep[n]), dtype=np.int64) for n in names}


def prune_lora(unet: torch.nn.Module, *, source: str, target: str, kept_fraction: float, rank: int, alpha: float,
               target_modules: list[str]) -> dict[str, Any]:
    """Add adapter ``target`` holding the highest-magnitude rank components of adapter ``source``.

    Returns the pruned adapter's description (``rank_pattern``, ``alpha_pattern``, kept/total components),
    which :func:`add_pruned_adapter` needs to rebuild the same structure.
    """
    keep = select_ranks(rank_magnitudes(unet, source), kept_fraction)
    spec = {
        "rank": rank,
        "alpha": alpha,
        "target_modules": list(target_modules),
        "rank_pattern": {re.escape(n): len(idx) for n, idx in keep.items()},
        "alpha_pattern": {re.escape(n): alpha * len(idx) / rank for n, idx in keep.items()},
        "kept": int(sum(len(v) for v in keep.values())),
        "total": int(rank * len(keep)),
    }
    add_pruned_adapter(unet, target, spec)
    full = lora_state(unet, source)
    state = {}
    for name, idx in keep.items():
        state[f"{name}.A"] = full[f"{name}.A"][torch.as_tensor(idx)]
        state[f"{name}.B"] = full[f"{name}.B"][:, torch.as_tensor(idx)]
    set_lora_state(unet, target, state)
    return spec


def add_pruned_adapter(unet: torch.nn.Module, adapter: str, spec: dict[str, Any]) -> None:
    """Inject adapter ``adapter`` with the per-layer ranks of ``spec`` (from :func:`prune_lora`)."""
    import warnings

    with warnings.catch_warnings():  # peft warns whenever a second adapter is added; that is intended here
        warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
        unet.add_adapter(lora_config(spec["rank"], spec["alpha"], spec["target_modules"], rank_pattern=spec["rank_pattern"],
                                     alpha_pattern=spec["alpha_pattern"]), adapter_name=adapter)


def save_lora(state: dict[str, torch.Tensor], folder: Path, spec: dict[str, Any]) -> None:
    """Write LoRA weights (safetensors) and their structure (JSON) to ``folder`` atomically."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{LORA_NAME}.tmp-{os.getpid()}"
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp))
    os.replace(tmp, folder / LORA_NAME)
    (folder / LORA_CONFIG_NAME).write_text(json.dumps(spec, indent=1))


def load_lora(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    from safetensors.torch import load_file

    folder = Path(folder).expanduser()
    if not (folder / LORA_NAME).is_file():
        raise FileNotFoundError(f"LoRA folder {folder} lacks {LORA_NAME}; point model.lora_weights at a folder written by prepare")
    return load_file(str(folder / LORA_NAME)), json.loads((folder / LORA_CONFIG_NAME).read_text())


# ----------------------------------------------------------------------------------------------------------
# model.kind: sd_lora in the model registry (base UNet + full-rank LoRA adapter "default")
# ----------------------------------------------------------------------------------------------------------
def _build_sd_lora(config: Any) -> torch.nn.Module:
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(str(Path(config.pipeline).expanduser() / "unet"), local_files_only=True)
    unet.requires_grad_(False)
    alpha = config.alpha if config.alpha is not None else float(config.rank)
    unet.add_adapter(lora_config(config.rank, alpha, config.target_modules))
    return unet


def _load_sd_lora(config: Any, folder: Path) -> torch.nn.Module:
    unet = _build_sd_lora(config)
    state, _ = load_lora(folder)
    set_lora_state(unet, "default", state)
    return unet


def _save_sd_lora(model: torch.nn.Module, folder: Path) -> None:
    save_lora(lora_state(model, "default"), folder, {"adapter": "default"})


def _sd_scheduler(config: Any) -> Any:
    from diffusers import DDPMScheduler

    raw = json.loads((Path(config.pipeline).expanduser() / "scheduler" / "scheduler_config.json").read_text())
    return DDPMScheduler.from_config({**{k: v for k, v in raw.items() if not k.startswith("_")}, "clip_sample": False})


register_model("sd_lora", ModelKind(build=_build_sd_lora, load=_load_sd_lora, save=_save_sd_lora, scheduler=_sd_scheduler))
