"""Stable Diffusion 1.x + LoRA backend (``model.kind: sd_lora``, the ArtBench setting).

Model: a Stable Diffusion 1.x pipeline from a local folder (``unet/``, ``vae/``, ``text_encoder/``,
``tokenizer/``, ``scheduler/``; safetensors weights only). The denoiser is the frozen base UNet plus a LoRA
(peft) on the attention projections; only LoRA weights are trained, saved and loaded (safetensors). Every
training image is captioned with the same prompt (``data.prompt``); images are encoded once by SD's VAE
(``latents-*``), samples use classifier-free guidance (``model.guidance_scale``) and are not clamped.

θ* = the LoRA (adapter ``default``) trained on all latents (or ``model.lora_weights``); θ~* = LoRA-rank
pruning into adapter ``pruned``; the recovered model = ``pruned`` fine-tuned on all latents; the null
model (v(∅)) = the base pipeline with the adapters switched off.

LoRA-rank pruning (θ* -> θ~*): for LoRA layer m with down-projection A_m (r x d_in), up-projection
B_m (d_out x r) and scale s_m = alpha_m / r_m, the update is ΔW_m = s_m Σ_i B_m[:, i] A_m[i, :]. Rank
component i has magnitude ||ΔW_m,i||_F = s_m ||B_m[:, i]|| ||A_m[i, :]||. All components of all layers are
ranked together and the highest are kept until ``1 - prune.ratio`` of them are kept (at least one per
layer); the kept layer ranks become peft's ``rank_pattern`` and ``alpha_pattern`` keeps every s_m, so the
pruned LoRA is an exact truncation of the full one.

Artifact hashes::

    latents    = hash(data, model codec fields)
    theta_star = hash(latents, model, train, seed)   or hash("lora", model)
    pruned     = hash(theta_star, prune, seed)
    recovered  = hash(pruned, recover, latents, seed)
"""

from __future__ import annotations

import json
import math
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from contribshap.workers.backends import DatasetFn
from contribshap.workers.backends.latents import encode_stage, latent_stage_hashes, read_latents
from contribshap.workers.models import ModelKind, from_pretrained_safetensors
from contribshap.workers.training import resolve_device, train

if TYPE_CHECKING:
    from contribshap.pipeline.config.diffusion import DiffusionGameConfig
    from contribshap.usecases.artbench.schema import SDLoraModelConfig

LORA_NAME = "lora.safetensors"
LORA_CONFIG_NAME = "lora.json"


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
    unet = from_pretrained_safetensors(UNet2DConditionModel, folder / "unet", key="model.pipeline/unet")
    vae = from_pretrained_safetensors(AutoencoderKL, folder / "vae", key="model.pipeline/vae")
    text_encoder = from_pretrained_safetensors(CLIPTextModel, folder / "text_encoder", key="model.pipeline/text_encoder")
    tokenizer = CLIPTokenizer.from_pretrained(str(folder / "tokenizer"), local_files_only=True)  # vocabulary files, no weights
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
def _build_sd_lora(config: SDLoraModelConfig) -> torch.nn.Module:
    from diffusers import UNet2DConditionModel

    unet = from_pretrained_safetensors(UNet2DConditionModel, Path(config.pipeline).expanduser() / "unet", key="model.pipeline/unet")
    unet.requires_grad_(False)
    alpha = config.alpha if config.alpha is not None else float(config.rank)
    unet.add_adapter(lora_config(config.rank, alpha, config.target_modules))
    return unet


def _load_sd_lora(config: SDLoraModelConfig, folder: Path) -> torch.nn.Module:
    unet = _build_sd_lora(config)
    state, _ = load_lora(folder)
    set_lora_state(unet, "default", state)
    return unet


def _save_sd_lora(model: torch.nn.Module, folder: Path) -> None:
    save_lora(lora_state(model, "default"), folder, {"adapter": "default"})


def _sd_scheduler(config: SDLoraModelConfig) -> Any:
    from diffusers import DDPMScheduler

    raw = json.loads((Path(config.pipeline).expanduser() / "scheduler" / "scheduler_config.json").read_text())
    return DDPMScheduler.from_config({**{k: v for k, v in raw.items() if not k.startswith("_")}, "clip_sample": False})


#: ``model.kind: sd_lora``.
SD_LORA_MODEL = ModelKind(build=_build_sd_lora, load=_load_sd_lora, save=_save_sd_lora, scheduler=_sd_scheduler)


def ensure_full_adapter(unet: torch.nn.Module, model_config: SDLoraModelConfig, alpha: float) -> None:
    """Add the full-rank adapter ``default`` (rank ``model.rank``) unless the UNet has it."""
    if "default" not in getattr(unet, "peft_config", {}):
        unet.add_adapter(lora_config(model_config.rank, alpha, list(model_config.target_modules)), adapter_name="default")


def replace_pruned_adapter(unet: torch.nn.Module, spec: dict[str, Any]) -> None:
    """(Re)create adapter ``pruned`` with the per-layer ranks of ``spec``."""
    drop_adapter(unet, "pruned")
    add_pruned_adapter(unet, "pruned", spec)


def drop_adapter(unet: torch.nn.Module, name: str) -> None:
    """Delete adapter ``name`` if the UNet has it."""
    if name in getattr(unet, "peft_config", {}):
        with warnings.catch_warnings():  # peft warns that the deleted adapter was active; it is re-added next
            warnings.filterwarnings("ignore", message="Adapter .* was active which is now deleted")
            unet.delete_adapters(name)


@torch.no_grad()
def reset_lora(unet: torch.nn.Module, adapter: str, *, seed: int) -> None:
    """Fresh LoRA init from ``seed``: A ~ kaiming-uniform (as peft), B = 0 (so ΔW = 0 at the start)."""
    generator = torch.Generator().manual_seed(int(seed) % (2**63))
    for _, layer in sorted(lora_layers(unet, adapter).items()):
        a = layer.lora_A[adapter].weight
        bound = 1.0 / np.sqrt(a.shape[1])
        a.copy_((torch.rand(a.shape, generator=generator) * 2 - 1) * bound)
        layer.lora_B[adapter].weight.zero_()


class WithoutLora(torch.nn.Module):
    """The base pipeline (v(∅)): ``inner`` called with the UNet's LoRA adapters switched off."""

    def __init__(self, unet: torch.nn.Module, inner: torch.nn.Module) -> None:
        super().__init__()
        self.unet, self.inner = unet, inner

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> Any:
        self.unet.disable_adapters()
        try:
            return self.inner(x, t)
        finally:
            self.unet.enable_adapters()


# ----------------------------------------------------------------------------------------------------------
# the backend
# ----------------------------------------------------------------------------------------------------------
class SDLoraBackend:
    """``model.kind: sd_lora``: one shared SD UNet whose LoRA adapters hold θ*, θ~* and every fine-tune.

    The start models and stage models below all live in the same UNet: each call sets the adapter weights
    it needs and activates that adapter, so a returned model is valid until the next call on the backend
    (the game trains and samples one coalition at a time).

    Args:
        config: a ``DiffusionGameConfig`` with ``model.kind: sd_lora``. seed: the run's seed.
    """

    clamp = False

    def __init__(self, config: DiffusionGameConfig, *, seed: int) -> None:
        self.config = config
        self.seed = int(seed)
        self.device = resolve_device(config.device)
        self.sd = load_sd_components(config.model.pipeline, device=self.device)
        self.codec = VAECodec(self.sd.vae, device=self.device, batch_size=config.model.encode_batch_size)
        self.noise_scheduler = noise_scheduler(self.sd)
        self.sample_shape = self.codec.latent_shape(config.data.image_size)
        self.cond = encode_prompt(self.sd, getattr(config.data, "prompt", ""), device=self.device)
        self.uncond = encode_prompt(self.sd, "", device=self.device)
        self.alpha = config.model.alpha if config.model.alpha is not None else float(config.model.rank)
        ensure_full_adapter(self.sd.unet, config.model, self.alpha)
        self._states: dict[str, dict[str, torch.Tensor]] = {}
        self._pruned_spec: dict[str, Any] | None = None

    def artifact_hashes(self) -> dict[str, str]:
        model = self.config.model
        return latent_stage_hashes(self.config, seed=self.seed, given=("lora", model) if model.lora_weights else None)

    def prepare(self, paths: dict[str, Path], dataset: DatasetFn, owner: np.ndarray, *, progress: bool) -> dict[str, Any]:
        from contribshap.workers.artifacts import stage

        c, unet = self.config, self.sd.unet
        out = {"latents": encode_stage(paths["latents"], self, dataset, owner)}
        latents = read_latents(paths["latents"], owner)

        # θ*: the LoRA trained on all latents (or model.lora_weights).
        def make_theta(folder: Path) -> dict[str, Any]:
            if c.model.lora_weights is not None:
                state, _ = load_lora(Path(c.model.lora_weights))
                stats = {"source": str(c.model.lora_weights)}
            else:
                reset_lora(unet, "default", seed=self.seed)
                unet.set_adapter("default")
                run = train(TextConditioned(unet, self.cond), self.noise_scheduler, latents, c.train, seed=self.seed,
                            device=self.device, precision=c.precision, progress="prepare 2/7 train LoRA θ*" if progress else None)
                state, stats = lora_state(unet, "default"), {"steps": run.steps, "final_loss": run.final_loss}
            save_lora(state, folder, {"rank": c.model.rank, "alpha": self.alpha, "target_modules": list(c.model.target_modules)})
            return {**stats, "lora_parameters": int(sum(v.numel() for v in state.values()))}

        out["theta_star"] = stage(paths["theta_star"], make_theta)

        # θ~*: LoRA-rank pruning into adapter "pruned".
        def make_pruned(folder: Path) -> dict[str, Any]:
            state, _ = load_lora(paths["theta_star"])
            set_lora_state(unet, "default", state)
            drop_adapter(unet, "pruned")
            spec = prune_lora(unet, source="default", target="pruned", kept_fraction=1.0 - c.prune.ratio, rank=c.model.rank,
                              alpha=self.alpha, target_modules=list(c.model.target_modules))
            pruned_state = lora_state(unet, "pruned")
            save_lora(pruned_state, folder, spec)
            return {"kept_components": spec["kept"], "total_components": spec["total"], "kept_fraction": 1.0 - c.prune.ratio,
                    "lora_parameters": int(sum(v.numel() for v in pruned_state.values())),
                    "lora_parameters_before": int(sum(v.numel() for v in state.values()))}

        out["pruned"] = stage(paths["pruned"], make_pruned)

        # Recovery fine-tuning of θ~* on all latents.
        def make_recovered(folder: Path) -> dict[str, Any]:
            state, spec = load_lora(paths["pruned"])
            replace_pruned_adapter(unet, spec)
            set_lora_state(unet, "pruned", state)
            unet.set_adapter("pruned")
            run = train(TextConditioned(unet, self.cond), self.noise_scheduler, latents, c.recover, seed=self.seed + 1,
                        device=self.device, precision=c.precision, progress="prepare 4/7 recover" if progress else None)
            save_lora(lora_state(unet, "pruned"), folder, spec)
            return {"steps": run.steps, "final_loss": run.final_loss}

        out["recovered"] = stage(paths["recovered"], make_recovered)
        return out

    def load(self, paths: dict[str, Path]) -> None:
        self._states["theta_star"], _ = load_lora(paths["theta_star"])
        self._states["pruned"], _ = load_lora(paths["pruned"])
        self._states["recovered"], spec = load_lora(paths["recovered"])
        if spec != self._pruned_spec:
            replace_pruned_adapter(self.sd.unet, spec)
            self._pruned_spec = spec

    def training_data(self, paths: dict[str, Path], dataset: DatasetFn, owner: np.ndarray) -> torch.Tensor:
        return read_latents(paths["latents"], owner)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return self.codec.encode(images)

    def decode(self, samples: torch.Tensor) -> torch.Tensor:
        return self.codec.decode(samples)

    def _activate(self, adapter: str, state: dict[str, torch.Tensor] | None, *, seed: int | None = None) -> None:
        unet = self.sd.unet
        unet.enable_adapters()
        if state is not None:
            set_lora_state(unet, adapter, state)
        else:
            reset_lora(unet, adapter, seed=seed)
        unet.set_adapter(adapter)

    def theta_star_start(self) -> torch.nn.Module:
        self._activate("default", self._states["theta_star"])
        return TextConditioned(self.sd.unet, self.cond)

    def recovered_start(self) -> torch.nn.Module:
        self._activate("pruned", self._states["recovered"])
        return TextConditioned(self.sd.unet, self.cond)

    def fresh_start(self, seed: int) -> torch.nn.Module:
        self._activate("default", None, seed=seed)
        return TextConditioned(self.sd.unet, self.cond)

    def sampling_model(self, trained: torch.nn.Module) -> torch.nn.Module:
        return Guided(self.sd.unet, self.cond, self.uncond, self.config.model.guidance_scale)

    def stage_model(self, name: str) -> torch.nn.Module:
        guided = Guided(self.sd.unet, self.cond, self.uncond, self.config.model.guidance_scale)
        if name == "null":
            return WithoutLora(self.sd.unet, guided)
        if name == "theta_star":
            self._activate("default", self._states["theta_star"])
        elif name in ("pruned", "recovered"):
            self._activate("pruned", self._states[name])
        else:
            raise ValueError(f"stage model {name!r} is unknown; valid: ['null', 'theta_star', 'pruned', 'recovered']")
        return guided

