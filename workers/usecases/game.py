"""The latent use cases as a :class:`contribshap.pipeline.games.Game`: CelebA-HQ (``model.kind: ldm``) and ArtBench
(``model.kind: sd_lora``). CIFAR-20 (``kind: unet``) needs none of this and runs in
``contribshap.workers.game.DiffusionGame``; :func:`build_usecase_game` picks the right class for any diffusion config.

Prepare (each step an idempotent artifact folder under ``<store>/artifacts``, keyed by a config hash):

1. ``latents-*``: every training image encoded once (VQ-VAE for ldm, SD's VAE for sd_lora), with owners.
2. ``theta_star-*``: θ* = the latent UNet trained on all latents (ldm), or the LoRA trained on all latents
   (sd_lora); ``model.pretrained`` / ``model.lora_weights`` load it instead.
3. ``pruned-*``: θ~* = torch-pruning magnitude pruning of the UNet (ldm) or LoRA-rank pruning (sd_lora).
4. ``recovered-*``: θ~* fine-tuned on all latents for ``recover.steps``.
5. ``extractor-*`` and ``reference-*``: the feature extractor (Ward clusters for ``diversity``; the LAION
   head needs no fitting) and the reference statistics of the real images.

Evaluate(S): start model by ``finetune.mode`` (sparsified_ft = recovered θ~*, ft = θ*, retrain = fresh),
K = ``finetune.steps`` steps on S's latents (batches from the job seed), DDIM from the shared noise
(``sampling.noise_seed + replicate``), decode, extract once, every property. The empty coalition is the
null model (ldm: seeded random init; sd_lora: the base pipeline without LoRA); the full coalition is
fine-tuned like any other (as ``contribshap.workers.game``).
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from contribshap.pipeline.games import Contributor, EvalResult
from contribshap.workers.prepare import config_hash
from contribshap.workers.properties import Reference, compute_properties
from contribshap.workers.sampling import initial_noise
from contribshap.workers.training import resolve_device, train
from contribshap.workers.usecases.common import sample_latents, stage

LATENT_KINDS = ("ldm", "sd_lora")


def build_usecase_game(config: Any, *, artifacts_dir: Path, seed: int = 0) -> Any:
    """The game for a ``DiffusionGameConfig``: :class:`UseCaseGame` for ldm / sd_lora, else DiffusionGame."""
    import contribshap.workers.usecases  # noqa: F401  (registers the use-case sources, model kinds, extractors)

    if config.model.kind in LATENT_KINDS:
        return UseCaseGame(config, artifacts_dir=artifacts_dir, seed=seed)
    from contribshap.workers.game import DiffusionGame

    return DiffusionGame(config, artifacts_dir=artifacts_dir, seed=seed)


def contributor_index(config: Any) -> tuple[list[Path] | None, np.ndarray, list[Contributor]]:
    """(files or None, owner int64 (N,), contributors) without decoding images when the source allows it."""
    from contribshap.workers.data import load_dataset

    source = config.data.source
    if source == "celebahq":
        from contribshap.workers.usecases.celebahq import read_celebahq_index

        files, owner, ids = read_celebahq_index(config.data)
        return files, owner, [Contributor(f"celebahq-{i}", f"identity {i}", int((owner == j).sum())) for j, i in enumerate(ids)]
    if source == "artbench":
        from contribshap.workers.usecases.artbench import read_artbench_index

        files, owner, ids = read_artbench_index(config.data)
        return files, owner, [Contributor(f"artist-{a}", a.replace("-", " ").title(), int((owner == j).sum())) for j, a in enumerate(ids)]
    dataset = load_dataset(config.data)
    return None, dataset.contributor_index.numpy(), list(dataset.contributors)


class UseCaseGame:
    """CelebA-HQ latent diffusion and ArtBench SD-LoRA behind the ``Game`` protocol.

    Args:
        config: a validated ``DiffusionGameConfig`` with ``model.kind`` in {ldm, sd_lora}.
        artifacts_dir: ``<store>/artifacts``. seed: the run's seed (θ* training, null model, reference set).

    Example::

        game = UseCaseGame(config, artifacts_dir=Path("runs/celebahq/artifacts"), seed=0)
        game.prepare()
        game.evaluate(np.ones(len(game.contributors()), bool), replicate=0, seed=1).values["diversity"]
    """

    def __init__(self, config: Any, *, artifacts_dir: Path, seed: int = 0) -> None:
        if config.model.kind not in LATENT_KINDS:
            raise ValueError(f"UseCaseGame runs model.kind in {list(LATENT_KINDS)}, got {config.model.kind!r}; "
                             "use contribshap.workers.game.DiffusionGame (or build_usecase_game) for kind unet")
        self.config = config
        self.artifacts_dir = Path(artifacts_dir)
        self.seed = int(seed)
        self._loaded: dict[str, Any] | None = None
        self._null_values: dict[int, tuple[dict[str, float], dict[str, float]]] = {}
        self._index: tuple[Any, np.ndarray, list[Contributor]] | None = None

    # -- Game protocol ------------------------------------------------------------------------------
    def contributors(self) -> list[Contributor]:
        return list(self._contributor_index()[2])

    def property_names(self) -> list[str]:
        return list(self.config.properties)

    def prepare(self) -> dict[str, Any]:
        """Build every missing artifact (steps 1-5 of the module docstring); returns a JSON-able summary."""
        missing = self.config.missing_paths()
        if missing:
            raise FileNotFoundError(f"missing local files ({len(missing)}): {'; '.join(missing)}; copy them there or fix the keys")
        return self._prepare(load=False)

    def evaluate(self, mask: np.ndarray, *, replicate: int = 0, seed: int = 0) -> EvalResult:
        """Fine-tune on S (``mask``: bool (n_players,)), sample, decode, measure every property."""
        state = self._load()
        mask = np.asarray(mask, dtype=bool)
        owner = state["owner"]
        if mask.shape != (len(self.contributors()),):
            raise ValueError(f"mask has shape {mask.shape}, expected ({len(self.contributors())},) (one entry per contributor)")
        indices = torch.as_tensor(np.flatnonzero(mask[owner]))
        info: dict[str, Any] = {"mode": self.config.finetune.mode, "n_images": len(indices), "device": str(state["device"]),
                                "model_kind": self.config.model.kind}
        if not mask.any():
            if replicate not in self._null_values:
                self._null_values[replicate] = self._measure(state, self._null_model(state), replicate)
            values, timings = self._null_values[replicate]
            return EvalResult(values=dict(values), timings={"finetune_s": 0.0, **timings}, info={**info, "null_model": "base" if self.config.model.kind == "sd_lora" else self.config.null_model})
        if len(indices) == 0:
            raise ValueError("the coalition owns no images; every contributor needs at least one image")

        # 1-3. Start model by mode, K steps on S's latents.
        start = time.perf_counter()
        model, steps, lr = self._start_model(state, seed)
        stats = train(model, state["scheduler"], state["latents"][indices], self.config.finetune, seed=seed, device=state["device"],
                      precision=self.config.precision, steps=steps, lr=lr)
        finetune_s = time.perf_counter() - start

        # 4-5. Shared noise, DDIM, decode, every property.
        values, timings = self._measure(state, self._sampling_model(state, model), replicate)
        info.update({"steps": steps, "lr": lr, "final_loss": stats.final_loss})
        return EvalResult(values=values, timings={"finetune_s": finetune_s, **timings}, info=info)

    # -- prepare ------------------------------------------------------------------------------------
    def _contributor_index(self) -> tuple[Any, np.ndarray, list[Contributor]]:
        if self._index is None:
            self._index = contributor_index(self.config)
        return self._index

    def _paths(self) -> dict[str, Path]:
        c = self.config
        codec = c.model.model_dump(mode="json", include={"kind", "vqvae", "latent_scale", "pipeline"})
        latents = config_hash(c.data, codec)
        if c.model.kind == "ldm":
            theta = config_hash("pretrained", c.model) if c.model.pretrained else config_hash(latents, c.model, c.train, self.seed)
        else:
            theta = config_hash("lora", c.model) if c.model.lora_weights else config_hash(latents, c.model, c.train, self.seed)
        pruned = config_hash(theta, c.prune, self.seed)
        recovered = config_hash(pruned, c.recover, latents, self.seed)
        extractor = config_hash(c.data, c.feature_extractor, self.seed)
        reference = config_hash(extractor, c.reference)
        a = self.artifacts_dir
        return {"latents": a / f"latents-{latents}", "theta_star": a / f"theta_star-{theta}", "pruned": a / f"pruned-{pruned}",
                "recovered": a / f"recovered-{recovered}", "extractor": a / f"extractor-{extractor}",
                "reference": a / f"reference-{reference}"}

    def _prepare(self, *, load: bool) -> dict[str, Any]:
        from contribshap.workers.data import load_dataset
        from contribshap.workers.properties.extractors import extractor_kind

        c = self.config
        device = resolve_device(c.device)
        paths = self._paths()
        self.artifacts_dir.mkdir(parents=True, exist_ok=True)
        summary: dict[str, Any] = {"device": str(device), "model_kind": c.model.kind}
        parts = self._parts(device)
        _, owner, contributors = self._contributor_index()
        summary["n_images"], summary["n_contributors"] = len(owner), len(contributors)

        # 1. Latents of every training image, encoded once.
        def make_latents(folder: Path) -> dict[str, Any]:
            from safetensors.torch import save_file

            images = load_dataset(c.data).images
            latents = parts["codec"].encode(images)
            save_file({"latents": latents.contiguous(), "owner": torch.from_numpy(owner)}, str(folder / "latents.safetensors"))
            return {"n": len(latents), "shape": list(latents.shape[1:]), "std": float(latents.std())}

        summary["latents"] = stage(paths["latents"], make_latents)
        latents = _read_latents(paths["latents"], owner)
        scheduler = parts["scheduler"]

        # 2-4. θ*, θ~*, recovered θ~*.
        if c.model.kind == "ldm":
            summary.update(self._prepare_ldm(paths, latents, scheduler, device))
        else:
            summary.update(self._prepare_sd_lora(paths, parts, latents, scheduler, device))

        # 5. Feature extractor and reference statistics of the real images.
        kind = extractor_kind(c.feature_extractor.kind)
        summary["extractor"] = stage(paths["extractor"], lambda folder: kind.fit(c.feature_extractor, load_dataset(c.data), folder,
                                                                                  seed=self.seed, device=device))
        extractor = kind.load(c.feature_extractor, paths["extractor"], device=device)

        def make_reference(folder: Path) -> dict[str, Any]:
            images = load_dataset(c.data).images
            features = extractor(images).features
            Reference(mu=features.mean(axis=0), sigma=np.atleast_2d(np.cov(features, rowvar=False)), features=features,
                      n_classes=extractor.n_classes).save(folder / "reference.npz")
            return {"n_reference": len(images), "feature_dim": int(features.shape[1])}

        summary["reference"] = stage(paths["reference"], make_reference)
        if load:
            self._loaded = {"device": device, "parts": parts, "latents": latents, "owner": owner, "scheduler": scheduler,
                            "extractor": extractor, "reference": Reference.load(paths["reference"] / "reference.npz"),
                            **self._load_models(paths, parts, device)}
        return summary

    def _parts(self, device: torch.device) -> dict[str, Any]:
        """Codec (VQ or VAE), training noise scheduler and, for sd_lora, the SD components and prompts."""
        c = self.config
        if c.model.kind == "ldm":
            from contribshap.workers.models import build_scheduler
            from contribshap.workers.usecases.celebahq import VQCodec

            codec = VQCodec(c.model.vqvae, latent_scale=c.model.latent_scale, device=device, batch_size=c.model.encode_batch_size)
            return {"codec": codec, "scheduler": build_scheduler(c.model), "latent_shape": codec.latent_shape(c.data.image_size)}
        from contribshap.workers.usecases.artbench import (
            VAECodec,
            encode_prompt,
            load_sd_components,
            noise_scheduler,
        )

        sd = load_sd_components(c.model.pipeline, device=device)
        codec = VAECodec(sd.vae, device=device, batch_size=c.model.encode_batch_size)
        prompt = getattr(c.data, "prompt", "")
        return {"codec": codec, "scheduler": noise_scheduler(sd), "sd": sd, "latent_shape": codec.latent_shape(c.data.image_size),
                "cond": encode_prompt(sd, prompt, device=device), "uncond": encode_prompt(sd, "", device=device)}

    def _prepare_ldm(self, paths: dict[str, Path], latents: torch.Tensor, scheduler: Any, device: torch.device) -> dict[str, Any]:
        from contribshap.workers.models import build_model, count_parameters, load_model, save_model
        from contribshap.workers.pruning import prune_model, save_pruned

        c = self.config
        out: dict[str, Any] = {}

        def make_theta(folder: Path) -> dict[str, Any]:
            if c.model.pretrained is not None:
                model, stats = load_model(c.model, Path(c.model.pretrained)), {"source": str(c.model.pretrained)}
            else:
                model = build_model(c.model, seed=self.seed).to(device)
                run = train(model, scheduler, latents, c.train, seed=self.seed, device=device, precision=c.precision,
                            progress="prepare 2/5 train θ*")
                stats = {"steps": run.steps, "final_loss": run.final_loss}
            save_model(c.model, model.cpu(), folder)
            return {**stats, "parameters": count_parameters(model)}

        out["theta_star"] = stage(paths["theta_star"], make_theta)

        def make_pruned(folder: Path) -> dict[str, Any]:
            model = load_model(c.model, paths["theta_star"])
            before = count_parameters(model)
            prune_model(model, c.prune, seed=self.seed)
            save_pruned(model, folder, model_config=c.model, prune=c.prune, base_folder=paths["theta_star"])
            return {"ratio": c.prune.ratio, "parameters": count_parameters(model), "parameters_before": before}

        out["pruned"] = stage(paths["pruned"], make_pruned)

        def make_recovered(folder: Path) -> dict[str, Any]:
            model = load_model(c.model, paths["pruned"]).to(device)
            run = train(model, scheduler, latents, c.recover, seed=self.seed + 1, device=device, precision=c.precision,
                        progress="prepare 4/5 recover")
            save_pruned(model.cpu(), folder, model_config=c.model, prune=c.prune, base_folder=paths["theta_star"])
            return {"steps": run.steps, "final_loss": run.final_loss, "parameters": count_parameters(model)}

        out["recovered"] = stage(paths["recovered"], make_recovered)
        return out

    def _prepare_sd_lora(self, paths: dict[str, Path], parts: dict[str, Any], latents: torch.Tensor, scheduler: Any,
                         device: torch.device) -> dict[str, Any]:
        from contribshap.workers.usecases import artbench as ab

        c = self.config
        unet = parts["sd"].unet
        alpha = c.model.alpha if c.model.alpha is not None else float(c.model.rank)
        out: dict[str, Any] = {}
        _ensure_full_adapter(unet, c.model, alpha)

        def make_theta(folder: Path) -> dict[str, Any]:
            if c.model.lora_weights is not None:
                state, _ = ab.load_lora(Path(c.model.lora_weights))
                stats = {"source": str(c.model.lora_weights)}
            else:
                _reset_lora(unet, "default", seed=self.seed)
                unet.set_adapter("default")
                run = train(ab.TextConditioned(unet, parts["cond"]), scheduler, latents, c.train, seed=self.seed, device=device,
                            precision=c.precision, progress="prepare 2/5 train LoRA θ*")
                state, stats = ab.lora_state(unet, "default"), {"steps": run.steps, "final_loss": run.final_loss}
            ab.save_lora(state, folder, {"rank": c.model.rank, "alpha": alpha, "target_modules": list(c.model.target_modules)})
            return {**stats, "lora_parameters": int(sum(v.numel() for v in state.values()))}

        out["theta_star"] = stage(paths["theta_star"], make_theta)

        def make_pruned(folder: Path) -> dict[str, Any]:
            state, _ = ab.load_lora(paths["theta_star"])
            ab.set_lora_state(unet, "default", state)
            _drop_adapter(unet, "pruned")
            spec = ab.prune_lora(unet, source="default", target="pruned", kept_fraction=1.0 - c.prune.ratio, rank=c.model.rank,
                                 alpha=alpha, target_modules=list(c.model.target_modules))
            pruned_state = ab.lora_state(unet, "pruned")
            ab.save_lora(pruned_state, folder, spec)
            return {"kept_components": spec["kept"], "total_components": spec["total"], "kept_fraction": 1.0 - c.prune.ratio,
                    "lora_parameters": int(sum(v.numel() for v in pruned_state.values())),
                    "lora_parameters_before": int(sum(v.numel() for v in state.values()))}

        out["pruned"] = stage(paths["pruned"], make_pruned)

        def make_recovered(folder: Path) -> dict[str, Any]:
            state, spec = ab.load_lora(paths["pruned"])
            _ensure_pruned_adapter(unet, spec)
            ab.set_lora_state(unet, "pruned", state)
            unet.set_adapter("pruned")
            run = train(ab.TextConditioned(unet, parts["cond"]), scheduler, latents, c.recover, seed=self.seed + 1, device=device,
                        precision=c.precision, progress="prepare 4/5 recover")
            ab.save_lora(ab.lora_state(unet, "pruned"), folder, spec)
            return {"steps": run.steps, "final_loss": run.final_loss}

        out["recovered"] = stage(paths["recovered"], make_recovered)
        return out

    # -- evaluate helpers ---------------------------------------------------------------------------
    def _load(self) -> dict[str, Any]:
        """Prepared artifacts, loaded once per game object (i.e. once per worker process)."""
        if self._loaded is None:
            self._prepare(load=True)
        return self._loaded

    def _load_models(self, paths: dict[str, Path], parts: dict[str, Any], device: torch.device) -> dict[str, Any]:
        c = self.config
        if c.model.kind == "ldm":
            from contribshap.workers.models import load_model

            return {"theta_star": load_model(c.model, paths["theta_star"]).to(device).eval(),
                    "recovered": load_model(c.model, paths["recovered"]).to(device).eval()}
        from contribshap.workers.usecases import artbench as ab

        theta_state, _ = ab.load_lora(paths["theta_star"])
        recovered_state, spec = ab.load_lora(paths["recovered"])
        _ensure_pruned_adapter(parts["sd"].unet, spec)
        return {"theta_state": theta_state, "recovered_state": recovered_state}

    def _start_model(self, state: dict[str, Any], seed: int) -> tuple[torch.nn.Module, int, float]:
        """(trainable model, steps, lr) for ``finetune.mode``."""
        c = self.config
        mode = c.finetune.mode
        if mode not in ("sparsified_ft", "ft", "retrain"):
            raise ValueError(f"finetune.mode={mode!r} is unknown; valid: ['sparsified_ft', 'ft', 'retrain']")
        steps, lr = (c.retrain_steps(), c.retrain_lr()) if mode == "retrain" else (c.finetune.steps, c.finetune.lr)
        if c.model.kind == "ldm":
            if mode == "retrain":
                from contribshap.workers.models import build_model

                return build_model(c.model, seed=seed % (2**31)).to(state["device"]), steps, lr
            return copy.deepcopy(state["recovered" if mode == "sparsified_ft" else "theta_star"]), steps, lr
        from contribshap.workers.usecases import artbench as ab

        unet = state["parts"]["sd"].unet
        unet.enable_adapters()
        if mode == "sparsified_ft":
            ab.set_lora_state(unet, "pruned", state["recovered_state"])
            unet.set_adapter("pruned")
        else:
            if mode == "ft":
                ab.set_lora_state(unet, "default", state["theta_state"])
            else:
                _reset_lora(unet, "default", seed=seed)
            unet.set_adapter("default")
        return ab.TextConditioned(unet, state["parts"]["cond"]), steps, lr

    def _sampling_model(self, state: dict[str, Any], model: torch.nn.Module) -> torch.nn.Module:
        if self.config.model.kind == "ldm":
            return model
        from contribshap.workers.usecases.artbench import Guided

        parts = state["parts"]
        return Guided(parts["sd"].unet, parts["cond"], parts["uncond"], self.config.model.guidance_scale)

    def _null_model(self, state: dict[str, Any]) -> torch.nn.Module:
        c = self.config
        if c.model.kind == "ldm":
            from contribshap.workers.prepare import null_model

            return null_model(c, state["theta_star"], seed=self.seed).to(state["device"])
        from contribshap.workers.usecases.artbench import Guided

        parts = state["parts"]
        return _BaseWithoutLora(Guided(parts["sd"].unet, parts["cond"], parts["uncond"], c.model.guidance_scale))

    def _measure(self, state: dict[str, Any], model: torch.nn.Module, replicate: int) -> tuple[dict[str, float], dict[str, float]]:
        """Shared noise -> DDIM -> decode -> one extractor pass -> every property: (values, timings)."""
        c = self.config
        parts = state["parts"]
        noise = initial_noise(c.sampling.n_images, parts["latent_shape"], seed=c.sampling.noise_seed + replicate)
        with _adapters_off(parts, model):
            latents, sample_s = sample_latents(model, state["scheduler"].config, noise, steps=c.sampling.steps,
                                               batch_size=c.sampling.batch_size, device=state["device"], precision=c.precision)
        start = time.perf_counter()
        images = parts["codec"].decode(latents)
        decode_s = time.perf_counter() - start
        start = time.perf_counter()
        values = compute_properties(list(c.properties), state["extractor"](images), state["reference"])
        return values, {"sample_s": sample_s + decode_s, "decode_s": decode_s, "eval_s": time.perf_counter() - start}


class _BaseWithoutLora(torch.nn.Module):
    """Marks a sampling model whose LoRA adapters must be switched off (the sd_lora null model)."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> Any:
        return self.inner(x, t)


class _adapters_off:
    """Context: disable the UNet's LoRA adapters while sampling a :class:`_BaseWithoutLora` model."""

    def __init__(self, parts: dict[str, Any], model: torch.nn.Module) -> None:
        self.unet = parts["sd"].unet if isinstance(model, _BaseWithoutLora) else None

    def __enter__(self) -> None:
        if self.unet is not None:
            self.unet.disable_adapters()

    def __exit__(self, *exc: object) -> None:
        if self.unet is not None:
            self.unet.enable_adapters()


def _read_latents(folder: Path, owner: np.ndarray) -> torch.Tensor:
    from safetensors.torch import load_file

    data = load_file(str(folder / "latents.safetensors"))
    if not np.array_equal(data["owner"].numpy(), owner):
        raise ValueError(f"cached latents {folder} do not match the current data index; delete the folder and re-run prepare")
    return data["latents"]


def _ensure_full_adapter(unet: torch.nn.Module, model_config: Any, alpha: float) -> None:
    from contribshap.workers.usecases.artbench import lora_config

    if "default" not in getattr(unet, "peft_config", {}):
        unet.add_adapter(lora_config(model_config.rank, alpha, list(model_config.target_modules)), adapter_name="default")


def _ensure_pruned_adapter(unet: torch.nn.Module, spec: dict[str, Any]) -> None:
    from contribshap.workers.usecases.artbench import add_pruned_adapter

    _drop_adapter(unet, "pruned")
    add_pruned_adapter(unet, "pruned", spec)


def _drop_adapter(unet: torch.nn.Module, name: str) -> None:
    import warnings

    if name in getattr(unet, "peft_config", {}):
        with warnings.catch_warnings():  # peft warns that the deleted adapter was active; it is re-added next
            warnings.filterwarnings("ignore", message="Adapter .* was active which is now deleted")
            unet.delete_adapters(name)


@torch.no_grad()
def _reset_lora(unet: torch.nn.Module, adapter: str, *, seed: int) -> None:
    """Fresh LoRA init from ``seed``: A ~ kaiming-uniform (as peft), B = 0 (so ΔW = 0 at the start)."""
    from contribshap.workers.usecases.artbench import lora_layers

    generator = torch.Generator().manual_seed(int(seed) % (2**63))
    for _, layer in sorted(lora_layers(unet, adapter).items()):
        a = layer.lora_A[adapter].weight
        bound = 1.0 / np.sqrt(a.shape[1])
        a.copy_((torch.rand(a.shape, generator=generator) * 2 - 1) * bound)
        layer.lora_B[adapter].weight.zero_()
