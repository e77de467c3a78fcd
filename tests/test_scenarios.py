"""Scenarios with known answers, tiny: twins get equal credit (exact design, through the real CLI).

Two contributors with identical image sets (``kind: copy``) make a symmetric game only up to the job
seeds: the driver derives every job's seed from its coalition key (``derive_seed``), so {A, C} and {B, C}
fine-tune on the same images with different batches and are equal in distribution, not bit for bit.
The test therefore checks two things:

1. In-process, with the same job seed, the game *is* symmetric exactly: the training tensor of {A, C} and
   of {B, C} is the same in the same order, so the values are bit-identical.
2. Through ``contribshap run`` on the exact design with two replicates per coalition, |φ_A - φ_B| lies
   inside the combined 95% interval 1.96·sqrt(se_A² + se_B²) on every property (the intervals come from
   the replicate noise, which is what separates the twins' values).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

TWINS_CONFIG = """
name: twins-tiny
seed: 0
game:
  kind: diffusion
  data:
    source: digits
    holdout_fraction: 0.3
    contributors:
      - {name: a, n_images: 40}
      - {name: b, kind: copy, of: a}
      - {name: c, n_images: 40}
  model: {kind: unet, block_out_channels: [8, 16], norm_num_groups: 4, attention_head_dim: null}
  train: {steps: 30, lr: 0.002, batch_size: 64}
  prune: {ratio: 0.3, importance: magnitude}
  recover: {steps: 10, lr: 0.001, batch_size: 64}
  finetune: {mode: sparsified_ft, steps: 5, lr: 0.0003, batch_size: 32}
  sampling: {scheduler: ddim, steps: 4, n_images: 64, batch_size: 64, noise_seed: 1234}
  properties: [fid, kid, inception_score, diversity, quality]
  feature_extractor: {kind: digits_cnn, feature_dim: 16, steps: 100}
  reference: heldout
  device: cpu
design: {kind: exact}
estimators: [exact_shapley]
replicates: {coalition: 2, endpoints: 2}
ray: {num_cpus: 1, local_num_cpus: 2}
"""


@pytest.mark.slow
def test_twins_get_equal_credit(tmp_path, ray_address, game_env, contribshap):
    config_path = tmp_path / "twins.yaml"
    config_path.write_text(TWINS_CONFIG)
    store = tmp_path / "twins"

    # 1. The real CLI: prepare, the exact design (8 coalitions, 2 replicates each), reduce.
    done = subprocess.run([*contribshap, "run", str(config_path), "--store", str(store), "--address", ray_address,
                           "--no-progress"], cwd=tmp_path, env=game_env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    document = json.loads((store / "estimates" / "estimates.json").read_text())

    # 2. |φ_a - φ_b| inside the combined 95% interval on every property.
    for prop, by_method in document.items():
        rows = {c["id"]: c for c in by_method["exact_shapley"]["contributors"]}
        a, b = rows["a"], rows["b"]
        assert a["identified"] and b["identified"], prop
        combined = 1.96 * float(np.hypot(a["stderr"], b["stderr"]))
        assert abs(a["value"] - b["value"]) <= combined + 1e-12, (prop, a, b)

    # 3. With one job seed the game is exactly symmetric in the twins.
    from contribshap.pipeline.config.schema import load_config
    from contribshap.workers.game import DiffusionGame

    cfg = load_config(config_path)
    game = DiffusionGame(cfg.game, artifacts_dir=Path(store) / "artifacts", seed=cfg.seed)
    for with_c in (False, True):
        with_a = game.evaluate(np.array([True, False, with_c]), replicate=0, seed=7).values
        with_b = game.evaluate(np.array([False, True, with_c]), replicate=0, seed=7).values
        assert with_a == with_b


# --- LDS / counterfactual lookups of bench/scenarios.py on a constructed additive game (fast) -----------------
def _scenarios_module():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "bench" / "scenarios.py"
    spec = importlib.util.spec_from_file_location("bench_scenarios", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_lds_study_on_an_additive_game():
    """Weights (8, 4, 2, -1): every subset sum is distinct, so the exact answers are known.

    The FT store holds the game exactly (two replicates); three retrain "seeds" add noise far smaller than
    the gaps between subset sums. ``quality`` is the game, ``fid`` its negation (lower is better).
    """
    sc = _scenarios_module()
    ids, w = ["a", "b", "c", "p"], np.array([8.0, 4.0, 2.0, -1.0])
    masks = sc.all_masks(4)
    v = masks.astype(float) @ w + 20.0
    ft_masks = np.concatenate([masks, masks])
    ft = (ids, ft_masks, {"quality": np.concatenate([v, v]), "fid": -np.concatenate([v, v])})
    noise = np.random.default_rng(0).uniform(-0.05, 0.05, size=(3, 16))
    seeds = [(ids, masks, {"quality": v + e, "fid": -(v + e)}) for e in noise]
    doc = sc.lds_study(ft, seeds, planted="p", n_bootstrap=50)

    assert doc["n_subsets"] == {"all": 14, "stratum": 7}
    for prop, sign in (("quality", 1.0), ("fid", -1.0)):
        entry = doc["properties"][prop]
        np.testing.assert_allclose(entry["phi"]["shapley"], sign * w, atol=1e-9)
        np.testing.assert_allclose(entry["phi"]["banzhaf"], sign * w, atol=1e-9)
        np.testing.assert_allclose(entry["phi"]["loo"], sign * w, atol=1e-9)
        for part in ("all", "stratum"):
            assert entry["lds"]["shapley"][part]["value"] == pytest.approx(100.0)
            assert entry["seed_to_seed"][part]["value"] == pytest.approx(100.0)
        assert entry["fixed_size"]["lds"]["shapley"]["all"]["value"] == pytest.approx(100.0)
        assert np.isnan(entry["lds"]["planted_indicator"]["stratum"]["value"])  # constant sums without p
        assert entry["lds"]["planted_indicator"]["all"]["value"] > 0

        # k = 1: the harmful one is p; removing it improves the property by (v(N∖p) − v(N)) / |v(N)| per seed.
        full, without_p = masks.sum(1) == 4, (masks == [1, 1, 1, 0]).all(1)
        rel = ((v + noise)[:, without_p] - (v + noise)[:, full]).ravel() / np.abs(v + noise)[:, full].ravel()
        harm = entry["counterfactuals"]["1"]["shapley"]["harmful"]
        assert harm["removed"] == [3]
        assert harm["improvement"]["value"] == pytest.approx(rel.mean())
        assert harm["improvement"]["ci_low"] < rel.mean() < harm["improvement"]["ci_high"]
        # k = 2: the helpful pair is {a, b}; its removal drops the property by 12 / 33.
        helpful = entry["counterfactuals"]["2"]["shapley"]["helpful"]
        assert helpful["removed"] == [0, 1]
        assert helpful["drop"]["value"] == pytest.approx(12.0 / 33.0, rel=1e-2)
        assert entry["counterfactuals"]["1"]["hindsight_best"]["harmful"]["removed"] == [3]
    verdict = doc["targets"]
    assert verdict["counterfactual_best"]["fid/k=1"]["rivals"]["planted_indicator"]["tie"]
    assert verdict["lds_min"]["fid"]["passed"] and verdict["lds_min"]["quality"]["passed"]


def test_fixed_size_lds_cancels_a_common_share():
    """A share c common to every φ_i adds c·|S| to each subset sum: it moves the all-sizes LDS (ranks by
    size) but not the fixed-size LDS (within one size it is the constant k·c), on the metric and through
    :func:`lds_study` on a game whose empty coalition sits off the additive trend (as the FT null model's).
    """
    from contribshap.pipeline.core.metrics import lds_score

    sc = _scenarios_module()
    ids, w = ["a", "b", "c", "d", "p"], np.array([16.0, 8.0, 4.0, 2.0, -1.0])  # all 32 subset sums distinct
    masks = sc.all_masks(5)
    proper = masks[(masks.sum(1) > 0) & (masks.sum(1) < 5)]
    noise = np.random.default_rng(0).uniform(-0.05, 0.05, size=(3, 32))
    retrain_all = masks.astype(float) @ w + 20.0 + noise
    retrain = retrain_all[:, (masks.sum(1) > 0) & (masks.sum(1) < 5)]

    # 1. The metric: φ and φ − 40 (the share outweighs every w·S), on the same subsets and seeds.
    base, shifted = w, w - 40.0
    assert lds_score(proper, base, retrain, n_bootstrap=50).value == pytest.approx(100.0)
    assert lds_score(proper, shifted, retrain, n_bootstrap=50).value < 0.0  # ranks |S| backwards
    fixed_base = sc.fixed_size_lds(proper, base, retrain, sizes=(2, 3), n_bootstrap=200)
    fixed_shifted = sc.fixed_size_lds(proper, shifted, retrain, sizes=(2, 3), n_bootstrap=200)
    assert fixed_base == fixed_shifted
    assert fixed_base["value"] == pytest.approx(100.0)
    assert {k: c["n_subsets"] for k, c in fixed_base["by_size"].items()} == {"2": 10, "3": 10}
    for k in ("2", "3"):  # each size's point value is lds_score's on that size alone
        rows = proper.sum(1) == int(k)
        assert fixed_base["by_size"][k]["value"] == pytest.approx(
            lds_score(proper[rows], base, retrain[:, rows], n_bootstrap=10).value)
    reversed_ = sc.fixed_size_lds(proper, -w, retrain, sizes=(2, 3), n_bootstrap=200)
    assert reversed_["value"] == pytest.approx(-100.0) and reversed_["ci_high"] < 0

    # 2. Through lds_study: FT game = the retrained one but v(∅) 200 above the trend, so exact Shapley is
    #    w − 40; the retrain seeds are additive. The all-sizes LDS punishes the share, fixed-size does not.
    v_ft = masks.astype(float) @ w + 20.0 + 200.0 * (masks.sum(1) == 0)
    ft = (ids, np.concatenate([masks, masks]), {"quality": np.concatenate([v_ft, v_ft])})
    seeds = [(ids, masks, {"quality": row}) for row in retrain_all]
    doc = sc.lds_study(ft, seeds, planted="p", n_bootstrap=50)
    entry = doc["properties"]["quality"]
    np.testing.assert_allclose(entry["phi"]["shapley"], w - 40.0, atol=1e-9)
    assert doc["fixed_size"]["n_subsets"] == {"all": {"2": 10, "3": 10}, "stratum": {"2": 6, "3": 4}}
    for part in ("all", "stratum"):
        assert entry["lds"]["shapley"][part]["value"] < 0
        assert entry["lds"]["shapley_centred"][part]["value"] > entry["lds"]["shapley"][part]["value"] + 50.0
        fixed = entry["fixed_size"]["lds"]
        assert fixed["shapley"][part]["value"] == pytest.approx(100.0)
        assert fixed["shapley"][part] == fixed["shapley_centred"][part]
        assert np.isnan(fixed["equal_split"][part]["value"])  # size alone: constant sums within a size
    assert not doc["targets"]["lds_min"]["quality"]["passed"]
    assert doc["targets_fixed_size"]["lds_min"]["quality"]["passed"]
    assert doc["targets_fixed_size"]["lds_min"]["quality"]["by_size"] == {"2": 100.0, "3": 100.0}
