"""The diffusion game: coalition mask -> fine-tune -> sample -> every property (``game.kind: diffusion``).

``DiffusionGame(config, *, artifacts_dir, seed)`` implements ``contribshap.pipeline.games.Game``. A worker process
builds it once (the driver caches it), loads the prepared artifacts once on first use, and then evaluates
many coalitions:

1. S's images: every image owned by a member of S.
2. The start model, by ``finetune.mode``: ``sparsified_ft`` = a copy of the pruned+recovered model
   (the paper's method), ``ft`` = a copy of θ*, ``retrain`` = a fresh random init (seeded by the job seed).
3. Train it on S's images: K = ``finetune.steps`` steps (``retrain``: ``retrain_steps`` at ``retrain_lr``),
   batches seeded by the job seed, EMA weights if configured.
4. Sample ``sampling.n_images`` images from the shared noise seed (common random numbers).
5. Extract features once; compute every property on them.

The empty coalition is the null model (``null_model``: a seeded random init, or θ* for ``base``), measured
with the same sampling and properties; it is not trained. The full coalition goes through steps 1-5 like
every other coalition: v(N) is then "the recovered model after K steps on all data", so v(N) - v(S)
reflects the data only, never a difference between the fine-tune procedure and the prepared model.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from contribshap.pipeline.games import Contributor, EvalResult
from contribshap.workers.data import load_dataset
from contribshap.workers.properties import Reference, compute_properties
from contribshap.workers.properties.extractors import Extractor
from contribshap.workers.sampling import sample_images


def measure_model(
    config: Any,
    model: torch.nn.Module,
    noise_scheduler: Any,
    extractor: Extractor,
    reference: Reference,
    *,
    replicate: int,
    device: torch.device,
    image_shape: tuple[int, ...],
) -> tuple[dict[str, float], dict[str, float]]:
    """Sample with the shared noise and compute every configured property: (values, timings)."""
    images, timings = sample_images(model, noise_scheduler, config.sampling, replicate=replicate, device=device,
                                    image_shape=image_shape)
    start = time.perf_counter()
    values = compute_properties(list(config.properties), extractor(images), reference)
    timings["eval_s"] = time.perf_counter() - start
    return values, timings


class DiffusionGame:
    """The paper's job as a :class:`contribshap.pipeline.games.Game`.

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

    def __init__(self, config: Any, *, artifacts_dir: Path, seed: int = 0) -> None:
        self.config = config
        self.artifacts_dir = Path(artifacts_dir)
        self.seed = int(seed)
        self._prepared = None
        self._null_values: dict[int, tuple[dict[str, float], dict[str, float]]] = {}

    # -- Game protocol ------------------------------------------------------------------------------
    def contributors(self) -> list[Contributor]:
        return list(load_dataset(self.config.data).contributors)

    def property_names(self) -> list[str]:
        return list(self.config.properties)

    def prepare(self) -> dict[str, Any]:
        from contribshap.workers.prepare import prepare

        return prepare(self.config, self.artifacts_dir, seed=self.seed)

    def evaluate(self, mask: np.ndarray, *, replicate: int = 0, seed: int = 0) -> EvalResult:
        """Fine-tune on S (``mask``, bool (n_players,)), sample, measure; see the module docstring."""
        from contribshap.workers.training import clone_model, train

        prepared = self._load()
        mask = np.asarray(mask, dtype=bool)
        indices = prepared.dataset.coalition_indices(mask)
        image_shape = tuple(prepared.dataset.images.shape[1:])
        info: dict[str, Any] = {"mode": self.config.finetune.mode, "n_images": len(indices),
                                "device": str(prepared.device)}

        # Empty coalition: the null model, measured once per replicate and process.
        if not mask.any():
            if replicate not in self._null_values:
                from contribshap.workers.prepare import null_model

                model = null_model(self.config, prepared.theta_star, seed=self.seed).to(prepared.device)
                self._null_values[replicate] = measure_model(
                    self.config, model, prepared.noise_scheduler, prepared.extractor, prepared.reference,
                    replicate=replicate, device=prepared.device, image_shape=image_shape)
            values, timings = self._null_values[replicate]
            return EvalResult(values=dict(values), timings={"finetune_s": 0.0, **timings}, info={**info, "null_model": self.config.null_model})
        if len(indices) == 0:
            members = [c.id for c, m in zip(prepared.dataset.contributors, mask, strict=True) if m]
            raise ValueError(f"coalition {members} owns no images; every contributor needs at least one image")

        # 1-3. Start model by mode, then train on S's images.
        start = time.perf_counter()
        finetune = self.config.finetune
        if finetune.mode == "sparsified_ft":
            model, steps, lr = clone_model(prepared.recovered), finetune.steps, finetune.lr
        elif finetune.mode == "ft":
            model, steps, lr = clone_model(prepared.theta_star), finetune.steps, finetune.lr
        elif finetune.mode == "retrain":
            from contribshap.workers.models import build_model

            model = build_model(self.config.model, seed=seed % (2**31)).to(prepared.device)
            steps, lr = self.config.retrain_steps(), self.config.retrain_lr()
        else:
            raise ValueError(f"finetune.mode={finetune.mode!r} is unknown; valid: ['sparsified_ft', 'ft', 'retrain']")
        stats = train(model, prepared.noise_scheduler, prepared.dataset.images[indices], finetune, seed=seed,
                      device=prepared.device, precision=self.config.precision, steps=steps, lr=lr)
        finetune_s = time.perf_counter() - start

        # 4-5. Sample with the shared noise, measure every property once.
        values, timings = measure_model(self.config, model, prepared.noise_scheduler, prepared.extractor,
                                        prepared.reference, replicate=replicate, device=prepared.device,
                                        image_shape=image_shape)
        info.update({"steps": steps, "lr": lr, "final_loss": stats.final_loss})
        return EvalResult(values=values, timings={"finetune_s": finetune_s, **timings}, info=info)

    # -- helpers ------------------------------------------------------------------------------------
    def _load(self):
        """The prepared artifacts, loaded once per game object (i.e. once per worker process)."""
        if self._prepared is None:
            from contribshap.workers.prepare import load_prepared

            self._prepared = load_prepared(self.config, self.artifacts_dir, seed=self.seed)
        return self._prepared
