"""The diffusion game: coalition mask -> fine-tune -> sample -> every property (``game.kind: diffusion``).

``DiffusionGame(config, *, artifacts_dir, seed)`` implements ``contribshap.pipeline.games.factory.Game`` for every
``model.kind``: pixel UNets (the digits demo, ``folder``, CIFAR-20), latent diffusion on VQ latents
(CelebA-HQ) and Stable Diffusion + LoRA (ArtBench). What differs between them is a backend
(``contribshap.workers.backends``); the job below is the same. A worker process builds the game once (the
driver caches it), loads the prepared artifacts once on first use, and then evaluates many coalitions:

1. S's training items: every image (or cached latent) owned by a member of S.
2. The start model, by ``finetune.mode`` (:func:`start_model`): ``sparsified_ft`` = the recovered pruned
   model (the paper's method), ``ft`` = θ*, ``retrain`` = a fresh init seeded by the job seed.
3. Train it on S's items: K = ``finetune.steps`` steps (``retrain``: ``retrain_steps`` at ``retrain_lr``),
   batches seeded by the job seed, EMA weights if configured.
4. Sample ``sampling.n_images`` from the shared noise seed (common random numbers); decode latents.
5. Extract features once; compute every property on them.

The full and the empty coalition (replicate 0) also keep a small grid of their first generated images,
``<artifacts_dir>/samples/{full,null}-<game hash>-r0.png`` (:func:`save_sample_grid`, written atomically),
named in the row's ``info["samples"]`` for the report.

The empty coalition is the null model (``null_model``: a seeded random init, or θ* for ``base``; SD-LoRA:
the base pipeline without LoRA), measured with the same sampling and properties; it is not trained. The
full coalition goes through steps 1-5 like every other coalition: v(N) is then "the recovered model after
K steps on all data", so v(N) - v(S) reflects the data only, never a difference between the fine-tune
procedure and the prepared model.

Sources, model kinds, feature extractors and properties are looked up in ``contribshap.workers.registry``
(the built-ins and every use case's, imported when a config names them), so any process that builds a game
knows every source.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from contribshap.pipeline.config.diffusion import FINETUNE_MODES
from contribshap.pipeline.contracts.game import Contributor, EvalResult
from contribshap.workers.artifacts import config_hash as artifact_hash
from contribshap.workers.backends import Backend, make_backend
from contribshap.workers.data import load_index
from contribshap.workers.measure import measure_model, save_sample_grid
from contribshap.workers.prepare import Prepared, load_prepared, prepare
from contribshap.workers.training import TrainStats, train

if TYPE_CHECKING:
    from contribshap.pipeline.config.diffusion import DiffusionGameConfig

#: Folder of the sample grids, inside the artifacts folder.
SAMPLES_DIR = "samples"


def build_diffusion_game(config: DiffusionGameConfig, *, artifacts_dir: Path, seed: int = 0) -> DiffusionGame:
    """The game of a ``game.kind: diffusion`` config (what ``contribshap.pipeline.games.factory.build_game`` returns).

    Args:
        config: a validated ``DiffusionGameConfig`` (any ``model.kind``).
        artifacts_dir: ``<store>/artifacts``. seed: the run's seed.
    """
    return DiffusionGame(config, artifacts_dir=artifacts_dir, seed=seed)


def start_model(config: DiffusionGameConfig, backend: Backend, *, seed: int) -> tuple[torch.nn.Module, int, float]:
    """(trainable start model, steps, lr) for ``finetune.mode``; the only place the mode picks a model.

    Args:
        config: ``DiffusionGameConfig``. backend: the loaded backend. seed: the job seed (``retrain`` init).
    """
    finetune = config.finetune
    if finetune.mode == "sparsified_ft":
        return backend.recovered_start(), finetune.steps, finetune.lr
    if finetune.mode == "ft":
        return backend.theta_star_start(), finetune.steps, finetune.lr
    if finetune.mode == "retrain":
        return backend.fresh_start(seed), config.retrain_steps(), config.retrain_lr()
    raise ValueError(f"finetune.mode={finetune.mode!r} is unknown; valid: {list(FINETUNE_MODES)}")


def finetune_on(config: DiffusionGameConfig, prepared: Prepared, mask: np.ndarray, *, seed: int) -> tuple[torch.nn.Module, TrainStats, int, float]:
    """Steps 1-3: start model by mode, trained on the items of coalition ``mask`` (bool (n_players,)).

    Returns:
        (trained model, training stats, steps, lr).
    """
    indices = prepared.coalition_indices(mask)
    if len(indices) == 0:
        members = [c.id for c, m in zip(prepared.contributors, mask, strict=True) if m]
        raise ValueError(f"coalition {members} owns no images; every contributor needs at least one image")
    model, steps, lr = start_model(config, prepared.backend, seed=seed)
    stats = train(model, prepared.backend.noise_scheduler, prepared.data[indices], config.finetune, seed=seed,
                  device=prepared.device, precision=config.precision, steps=steps, lr=lr)
    return model, stats, steps, lr


class DiffusionGame:
    """The paper's job as a :class:`contribshap.pipeline.games.factory.Game`, for every ``model.kind``.

    Args:
        config: a validated ``DiffusionGameConfig``.
        artifacts_dir: where prepare writes and workers read the artifacts (``<store>/artifacts``).
        seed: the run's seed (θ* training, null model init).

    Example::

        game = DiffusionGame(config, artifacts_dir=Path("runs/demo/artifacts"), seed=0)
        game.prepare()
        result = game.evaluate(np.ones(len(game.contributors()), bool), replicate=0, seed=123)
        result.values["fid"], result.timings["finetune_s"]
    """

    def __init__(self, config: DiffusionGameConfig, *, artifacts_dir: Path, seed: int = 0) -> None:
        self.config = config
        self.artifacts_dir = Path(artifacts_dir)
        self.seed = int(seed)
        self._backend: Backend | None = None
        self._prepared: Prepared | None = None
        self._null_values: dict[int, tuple[dict[str, float], dict[str, float]]] = {}
        self._grid_tag = artifact_hash(config)  # sample grids of another game (e.g. retrain mode) never collide

    # -- Game protocol ------------------------------------------------------------------------------
    def contributors(self) -> list[Contributor]:
        return list(load_index(self.config.data)[1])

    def property_names(self) -> list[str]:
        return list(self.config.properties)

    def prepare(self) -> dict[str, Any]:
        """Build every missing artifact (``contribshap.workers.prepare``); idempotent; a JSON-able summary."""
        return prepare(self.config, self.backend(), self.artifacts_dir, seed=self.seed)

    def evaluate(self, mask: np.ndarray, *, replicate: int = 0, seed: int = 0) -> EvalResult:
        """Fine-tune on S (``mask``, bool (n_players,)), sample, measure; see the module docstring."""
        prepared = self._load()
        mask = np.asarray(mask, dtype=bool)
        n_items = len(prepared.coalition_indices(mask))
        info: dict[str, Any] = {"mode": self.config.finetune.mode, "n_images": n_items, "device": str(prepared.device),
                                "model_kind": self.config.model.kind}

        # Empty coalition: the null model, measured once per replicate and process.
        if not mask.any():
            keep = self._sample_grid("null", replicate)
            if replicate not in self._null_values:
                self._null_values[replicate] = measure_model(
                    self.config, prepared.backend, prepared.backend.stage_model("null"), prepared.extractor,
                    prepared.reference, replicate=replicate, device=prepared.device, on_images=keep)
            values, timings = self._null_values[replicate]
            info["null_model"] = self.config.null_model
            if keep is not None:
                info["samples"] = keep.name
            return EvalResult(values=dict(values), timings={"finetune_s": 0.0, **timings}, info=info)

        # 1-3. Start model by mode, then train on S's items.
        start = time.perf_counter()
        model, stats, steps, lr = finetune_on(self.config, prepared, mask, seed=seed)
        finetune_s = time.perf_counter() - start

        # 4-5. Sample with the shared noise, measure every property once (the full coalition keeps a grid).
        keep = self._sample_grid("full", replicate) if mask.all() else None
        values, timings = measure_model(self.config, prepared.backend, prepared.backend.sampling_model(model),
                                        prepared.extractor, prepared.reference, replicate=replicate,
                                        device=prepared.device, on_images=keep)
        info.update({"steps": steps, "lr": lr, "final_loss": stats.final_loss})
        if keep is not None:
            info["samples"] = keep.name
        if prepared.device.type == "cuda":  # peak of this worker process so far (bench/gpu_smoke.sh reports it)
            info["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated(prepared.device) / 2**30, 3)
        return EvalResult(values=values, timings={"finetune_s": finetune_s, **timings}, info=info)

    # -- helpers ------------------------------------------------------------------------------------
    def _sample_grid(self, which: str, replicate: int) -> _GridWriter | None:
        """The grid writer of the ``full`` / ``null`` model for replicate 0 (None for other replicates)."""
        if replicate != 0:
            return None
        relative = f"{SAMPLES_DIR}/{which}-{self._grid_tag}-r{replicate}.png"
        return _GridWriter(self.artifacts_dir / relative, f"{self.artifacts_dir.name}/{relative}")

    def backend(self) -> Backend:
        """The model kind's backend, built on first use (it loads the model components)."""
        if self._backend is None:
            self._backend = make_backend(self.config, seed=self.seed)
        return self._backend

    def _load(self) -> Prepared:
        """The prepared artifacts, loaded once per game object (i.e. once per worker process)."""
        if self._prepared is None:
            self._prepared = load_prepared(self.config, self.artifacts_dir, seed=self.seed, backend=self.backend())
        return self._prepared


class _GridWriter:
    """``on_images`` callback of :func:`measure_model` that saves a sample grid; ``name`` is the path
    recorded in the row's ``info["samples"]`` (relative to the store: ``artifacts/samples/...png``)."""

    def __init__(self, path: Path, name: str) -> None:
        self.path, self.name = path, name

    def __call__(self, images: torch.Tensor) -> None:
        save_sample_grid(images, self.path)
