"""The diffusion game end to end on a tiny model: prepare, evaluate, determinism, CRN, modes, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from contribshap.pipeline.config.diffusion import DiffusionGameConfig
from contribshap.workers.game import DiffusionGame

TINY = {
    "kind": "diffusion",
    "data": {"source": "digits", "classes": [0, 1, 7], "planted": [{"kind": "noise", "name": "noise", "n_images": 40}]},
    "model": {"block_out_channels": [8, 16]},
    "train": {"steps": 20, "batch_size": 32},
    "recover": {"steps": 10, "batch_size": 32},
    "finetune": {"steps": 4, "batch_size": 16, "retrain_steps": 6},
    "sampling": {"steps": 3, "n_images": 48, "batch_size": 24},
    "feature_extractor": {"steps": 40, "feature_dim": 8},
    "device": "cpu",
}


@pytest.fixture(scope="module")
def game(tmp_path_factory):
    config = DiffusionGameConfig.model_validate(TINY)
    game = DiffusionGame(config, artifacts_dir=tmp_path_factory.mktemp("artifacts"), seed=0)
    game.summary = game.prepare()
    return game


def test_prepare_builds_every_artifact_once(game):
    summary = game.summary
    assert summary["pruned"]["parameters"] < summary["pruned"]["parameters_before"]
    assert 0.0 <= summary["extractor"]["test_accuracy"] <= 1.0
    assert set(summary["stages"]["values"]) == {"null", "theta_star", "pruned", "recovered"}
    again = game.prepare()
    assert all(again[stage]["reused"] for stage in ("theta_star", "pruned", "recovered", "extractor", "reference", "stages"))
    assert [c.id for c in game.contributors()] == ["class-0", "class-1", "class-7", "planted-noise"]


def test_evaluate_returns_finite_values_and_is_deterministic(game):
    mask = np.array([True, False, True, True])
    first = game.evaluate(mask, replicate=0, seed=11)
    assert set(first.values) == set(game.property_names())
    assert all(math.isfinite(v) for v in first.values.values())
    assert {"finetune_s", "sample_s", "eval_s"} <= set(first.timings)
    assert first.info["n_images"] == sum(c.n_samples for c, m in zip(game.contributors(), mask, strict=True) if m)
    assert game.evaluate(mask, replicate=0, seed=11).values == first.values
    assert game.evaluate(mask, replicate=0, seed=12).values != first.values


def test_common_random_numbers_across_coalitions(game, monkeypatch):
    import contribshap.workers.sampling as sampling

    seen = []
    original = sampling.initial_noise

    def spy(*args, **kwargs):
        noise = original(*args, **kwargs)
        seen.append(noise.clone())
        return noise

    monkeypatch.setattr(sampling, "initial_noise", spy)
    game.evaluate(np.array([True, False, False, False]), replicate=0, seed=1)
    game.evaluate(np.array([False, True, True, True]), replicate=0, seed=2)
    game.evaluate(np.array([False, True, True, True]), replicate=1, seed=2)
    assert torch.equal(seen[0], seen[1])          # same x_T for different coalitions and job seeds
    assert not torch.equal(seen[1], seen[2])      # replicate 1 draws fresh noise
    assert seen[0].shape == (48, 1, 8, 8)


def test_empty_coalition_is_the_null_model(game):
    empty = game.evaluate(np.zeros(4, bool), replicate=0, seed=3)
    assert empty.timings["finetune_s"] == 0.0
    assert empty.values == pytest.approx(game.summary["stages"]["values"]["null"])


@pytest.mark.parametrize("mode", ["ft", "retrain"])
def test_other_finetune_modes_run(game, mode):
    config = game.config.model_copy(update={"finetune": game.config.finetune.model_copy(update={"mode": mode})})
    other = DiffusionGame(config, artifacts_dir=game.artifacts_dir, seed=0)
    result = other.evaluate(np.array([True, True, False, False]), replicate=0, seed=5)
    assert all(math.isfinite(v) for v in result.values.values())
    assert result.info["steps"] == (6 if mode == "retrain" else 4)


def test_empty_image_set_is_a_clear_error(game):
    from contribshap.workers.training import resolve_device, train

    prepared = game._load()
    with pytest.raises(ValueError, match="empty image set"):
        train(prepared.backend.recovered_start(), prepared.backend.noise_scheduler, prepared.data[:0], game.config.finetune,
              seed=0, device=resolve_device("cpu"))
    with pytest.raises(ValueError, match="expected \\(4,\\)"):
        game.evaluate(np.ones(3, bool), replicate=0, seed=0)


def test_artifact_stage_is_atomic_idempotent_and_cleans_dead_writers(tmp_path):
    import os
    import subprocess
    import sys

    from contribshap.workers.artifacts import clean_stale_tmp, stage

    calls = []

    def make(folder):
        calls.append(folder.name)
        (folder / "weights.txt").write_text("w")
        return {"value": 1}

    first = stage(tmp_path / "model-abc", make)
    again = stage(tmp_path / "model-abc", make)
    assert (first["reused"], again["reused"], again["value"]) == (False, True, 1)
    assert calls == [f".model-abc.tmp-{os.getpid()}"] and (tmp_path / "model-abc" / "weights.txt").is_file()

    # a writer killed mid-stage leaves .<name>.tmp-<pid>; the next prepare removes it, a live writer's stays
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / f".model-def.tmp-{int(dead.stdout)}").mkdir()
    (tmp_path / f".model-ghi.tmp-{os.getppid()}").mkdir()
    assert clean_stale_tmp(tmp_path) == [f".model-def.tmp-{int(dead.stdout)}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".model-ghi.tmp-{os.getppid()}", "model-abc"]

    # a failing build leaves no artifact under the final name
    def broken(folder):
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        stage(tmp_path / "model-xyz", broken)
    assert not (tmp_path / "model-xyz").exists()
