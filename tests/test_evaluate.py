"""`contribshap evaluate` and the store baselines on constructed stores with known answers (no torch)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from contribshap.pipeline.config.schema import load_config
from contribshap.pipeline.contracts.keys import mask_to_str
from contribshap.pipeline.core.metrics import lds_score
from contribshap.pipeline.core.store_baselines import required_masks, store_baselines
from contribshap.pipeline.products import evaluate as ev
from contribshap.pipeline.products.readers import load_estimates
from contribshap.pipeline.storage.plan import read_plan
from contribshap.pipeline.storage.store import Store
from games_eval import WEIGHTS, additive, build_store, planted_weights


# --- store baselines -------------------------------------------------------------------------------------
def test_loo_and_add_one_in_equal_the_weights_on_an_additive_game():
    n = 6
    masks = required_masks(n, ["loo", "add_one_in"])
    values = np.array([additive(m)["value"] for m in masks])
    out = store_baselines(masks, values, 10.0, 10.0 + WEIGHTS[:n].sum(), ["loo", "add_one_in"])
    assert np.allclose(out["loo"].value, WEIGHTS[:n]) and np.allclose(out["add_one_in"].value, WEIGHTS[:n])
    partial = store_baselines(masks[:3], values[:3], 10.0, 10.0 + WEIGHTS[:n].sum(), ["loo"])
    assert np.isnan(partial["loo"].value[3:]).all() and partial["loo"].note == "3 of 6 coalitions missing"
    with pytest.raises(ValueError, match=r"unknown store baseline\(s\) \['shap'\]; valid: \['loo'"):
        store_baselines(masks, values, 0.0, 1.0, ["shap"])


def test_msr_and_datamodel_recover_an_additive_game_on_a_uniform_design():
    from contribshap.pipeline.core.designs import sample_coalitions

    n = 8
    masks = np.asarray(sample_coalitions(n, 200, "uniform", seed=0), dtype=bool)
    values = np.array([additive(m)["value"] for m in masks])
    out = store_baselines(masks, values, 10.0, 10.0 + WEIGHTS[:n].sum(), ["banzhaf_on_estimate_rows", "datamodel"])
    assert np.allclose(out["banzhaf_on_estimate_rows"].value, WEIGHTS[:n], atol=0.6)
    assert np.allclose(out["datamodel"].value, WEIGHTS[:n], atol=0.05)


# --- run_evaluate on a store (held-out evaluations in-process, or through the real driver) -----------------
def _in_process(monkeypatch):
    """Replace the driver call by direct game evaluation (python games only); counts calls."""
    calls = []

    def fake(cfg, store, masks, *, section, seeds, mode, address, progress, props):
        from contribshap.pipeline.games.factory import build_game

        calls.append((section, len(masks), tuple(seeds), mode))
        game = build_game(cfg, store)
        out = {p: np.full((len(seeds), len(masks)), math.nan) for p in props}
        for si in range(len(seeds)):
            for j, mask in enumerate(masks):
                values = game.evaluate(mask, replicate=0, seed=si).values
                for p in props:
                    out[p][si, j] = values[p]
        return out

    monkeypatch.setattr(ev, "_evaluate", fake)
    return calls


def test_run_evaluate_scores_every_method_and_writes_the_documents(tmp_path, monkeypatch, capsys):
    root = build_store(tmp_path / "store", target="games_eval:additive", n=6, design="paired", budget=16,
                       methods=("kernelshap",))
    planned = {r["mask"] for r in read_plan(Store(root))}
    probes = {mask_to_str(m) for m in required_masks(6, ["loo", "add_one_in"])}
    calls = _in_process(monkeypatch)
    doc = ev.run_evaluate(root, n_subsets=30, top_k=(0.2,))  # counterfactuals are on by default
    printed = capsys.readouterr().out
    # 1. exact-in-the-limit estimates of an additive game: LDS 100 for kernelshap, LOO and add-one-in
    for prop in ("value", "loss"):
        for method in ("kernelshap", "loo", "add_one_in"):
            assert doc["lds"][prop][method]["value"] == pytest.approx(100.0, abs=1e-6), (prop, method)
        for method in ("banzhaf_on_estimate_rows", "datamodel"):  # regressions on a paired (not uniform) design
            assert doc["lds"][prop][method]["value"] > 80.0, (prop, method)
        assert f"{prop} kernelshap: LDS 100.0 [100.0, 100.0]" in printed
    assert abs(doc["lds"]["value"]["random"]["value"]) < 100.0
    # 2. the driver saw the LOO/singleton rows once, then held-out and counterfactual masks
    assert [c[0] for c in calls] == ["counterfactual", "holdout", "counterfactual"]
    assert calls[0][1] == len(probes - planned) > 0  # the LOO / singleton rows the 16-row plan lacks
    assert calls[2][2] == (0, 1, 2)  # counterfactual coalitions: 3 replicates (evaluation.counterfactual_replicates)
    # 3. counterfactual: removing the top-20% (1 contributor, p0 with w=4) lowers `value` by 4 / v_full
    v_full = 10.0 + WEIGHTS[:6].sum()
    top = next(e for e in doc["counterfactual"]["value"]["kernelshap"] if e["action"] == "remove_top")
    assert top["removed"] == ["p0"] and top["value"] == pytest.approx(-WEIGHTS[0] / v_full)
    assert top["n_seeds"] == 3 and top["ci_low"] == pytest.approx(top["value"])  # a deterministic game
    bottom = next(e for e in doc["counterfactual"]["value"]["kernelshap"] if e["action"] == "remove_bottom")
    assert bottom["removed"] == ["p1"] and bottom["value"] == pytest.approx(-WEIGHTS[1] / v_full)
    # 4. files: strict JSON and a Parquet long table
    saved = json.loads((root / "estimates" / "evaluation.json").read_text())
    assert saved["settings"]["n_subsets"] == 30 and len(saved["holdout"]["masks"]) == 20  # C(6, 3)
    assert any(n.startswith("only 20 distinct held-out subsets exist for n=6, alpha=0.5 apart from the")
               for n in saved["notes"])
    import pyarrow.parquet as pq

    table = pq.read_table(root / "estimates" / "evaluation.parquet").to_pylist()
    assert {r["metric"] for r in table} == {"lds", "remove_top", "remove_bottom"}


def test_held_out_subsets_never_coincide_with_the_plan(tmp_path, monkeypatch):
    """n=6 and 38 paired draws: 12 of the 20 size-3 subsets are estimate rows, and the held-out stream of
    the store's seed draws all 12 of them; evaluate rejects and redraws them."""
    from contribshap.pipeline.core.designs import sample_coalitions

    root = build_store(tmp_path / "store", target="games_eval:additive", n=6, design="paired", budget=40,
                       methods=("kernelshap",))
    plan = {r["mask"] for r in read_plan(Store(root)) if r["section"] in ("estimate", "endpoint")}
    holdout_seed = int(np.random.SeedSequence([0, ev._HOLDOUT_SEED_SALT]).generate_state(1)[0])
    unguarded = {mask_to_str(m) for m in sample_coalitions(6, 30, "datamodel", seed=holdout_seed, alpha=0.5)}
    assert len(unguarded & plan) == 12  # the draw without rejection collides
    _in_process(monkeypatch)
    doc = ev.run_evaluate(root, n_subsets=30, counterfactual=False, progress=False)
    held_out = set(doc["holdout"]["masks"])
    assert len(held_out) == len(doc["holdout"]["masks"]) == 8 and not held_out & plan
    assert doc["holdout"]["rejected"] == 12
    assert "12 held-out draw(s) equal to a coalition the methods saw were rejected and redrawn" in doc["notes"]
    # a design that leaves fewer than 3 admissible subsets is refused, naming the fix
    root2 = build_store(tmp_path / "store2", target="games_eval:additive", n=4, design="exact", budget=16,
                        methods=("kernelshap",))
    with pytest.raises(ValueError, match=r"^only 0 held-out subsets of size 2 differ from the 16 coalitions"):
        ev.run_evaluate(root2, n_subsets=10, counterfactual=False, progress=False)


def test_stratified_lds_and_the_planted_indicator_on_an_additive_game(tmp_path, monkeypatch, capsys):
    """Additive game, planted p5 of weight -30: overall every held-out ranking is dominated by p5.

    Known answers: the exact attribution scores 100 overall and on the subsets without p5; the planted
    indicator scores 100 x Spearman(-[p5 in S], v(S)) overall (high) and is undefined (constant sums)
    without p5; an attribution right about p5 but reversed on the genuine players is high overall and
    -100 without p5.
    """
    from scipy import stats

    n = 6
    weights = planted_weights(n)
    root = build_store(tmp_path / "store", target="games_eval:planted_additive", n=n, design="paired", budget=16,
                       methods=("kernelshap",), evaluation={"stratify_exclude": ["p5"]})
    _in_process(monkeypatch)
    doc = ev.run_evaluate(root, n_subsets=30, counterfactual=False)
    printed = capsys.readouterr().out
    masks = np.array([[c == "1" for c in m] for m in doc["holdout"]["masks"]])
    values = np.array(doc["holdout"]["values"]["value"][0])
    assert np.allclose(values, 10.0 + masks @ weights)
    lds, strat = doc["lds"]["value"], doc["lds_stratified"]["value"]
    # 1. the stratum: held-out subsets without p5
    without = ~masks[:, 5]
    assert doc["stratify"]["exclude"] == ["p5"] and doc["stratify"]["n_subsets"] == int(without.sum()) == 10
    assert doc["settings"]["stratify_exclude"] == ["p5"]
    # 2. exact attributions (kernelshap of an additive game, LOO): 100 overall and stratified
    for method in ("kernelshap", "loo"):
        assert lds[method]["value"] == pytest.approx(100.0) and strat[method]["value"] == pytest.approx(100.0)
    # 3. the planted indicator (-1 for p5; the sign fitted on estimate rows keeps it: p5 lowers `value`)
    assert doc["attributions"]["value"]["planted_indicator"]["value"] == [0, 0, 0, 0, 0, -1]
    expected = 100.0 * stats.spearmanr(-masks[:, 5].astype(float), values).statistic
    assert lds["planted_indicator"]["value"] == pytest.approx(expected) and expected > 80.0
    assert lds["planted_indicator"]["kind"] == "reference"
    assert strat["planted_indicator"]["value"] is None  # NaN: it says nothing about the genuine players
    # 4. right about the planted one, reversed on the genuine ones: high overall, -100 without p5
    flipped = np.concatenate([-weights[:5], [weights[5]]])
    assert lds_score(masks, flipped, values).value > 40.0
    assert lds_score(masks[without], flipped, values[without]).value == pytest.approx(-100.0)
    # 5. printed: the stratified LDS next to the overall one
    assert "value kernelshap: LDS 100.0 [100.0, 100.0]; without p5: LDS 100.0 [100.0, 100.0] (10 subsets)" in printed
    with pytest.raises(ValueError, match=r"stratify_exclude=\['p9'\]: not contributor ids of this store; valid ids: p0"):
        ev.run_evaluate(root, n_subsets=30, stratify_exclude=["p9"])


def test_planted_contributors_are_the_default_stratum(tmp_path):
    root = build_store(tmp_path / "store", target="games_eval:additive", n=4, budget=12, methods=("kernelshap",))
    cfg = load_config(root / "config.yaml", check_paths=False)
    ids = ["class-0", "class-1", "planted-noise", "planted-dups"]
    settings = ev._resolve_settings(cfg, n_subsets=None, alpha=None, mode=None, seeds=None, top_k=(0.1,), ids=ids)
    assert settings.stratify_exclude == ["planted-noise", "planted-dups"] and settings.counterfactual
    assert ev._resolve_settings(cfg, n_subsets=None, alpha=None, mode=None, seeds=None, top_k=(0.1,),
                                ids=["p0", "p1"]).stratify_exclude == []


def test_banzhaf_uniform_is_msr_on_its_own_uniform_rows(tmp_path, monkeypatch):
    """On an additive game MSR has a closed form on any sample: w_i plus the sample's imbalance term."""
    from contribshap.pipeline.core.designs import sample_coalitions

    n = 8
    root = build_store(tmp_path / "store", target="games_eval:additive", n=n, design="paired", budget=40,
                       methods=("kernelshap",))
    calls = _in_process(monkeypatch)
    doc = ev.run_evaluate(root, n_subsets=20, banzhaf_uniform=True, counterfactual=False, progress=False)
    # 1. its own design: 38 distinct uniform coalitions (the run's estimate draws), own seed and section
    seed = int(np.random.SeedSequence([0, ev._BANZHAF_SEED_SALT]).generate_state(1)[0])
    draws = np.asarray(sample_coalitions(n, 38, "uniform", seed=seed), dtype=bool)
    assert doc["banzhaf_uniform"]["masks"] == [mask_to_str(m) for m in draws] and doc["banzhaf_uniform"]["seed"] == seed
    assert ("banzhaf_uniform", 38, (0,), None) in calls
    # 2. closed form of MSR (with the endpoints) on an additive game
    z = np.vstack([draws, np.zeros((1, n), bool), np.ones((1, n), bool)]).astype(float)
    w = WEIGHTS[:n]
    closed = np.array([w[i] + sum(w[j] * (z[z[:, i] == 1, j].mean() - z[z[:, i] == 0, j].mean())
                                  for j in range(n) if j != i) for i in range(n)])
    got = np.array(doc["attributions"]["value"]["banzhaf_uniform"]["value"])
    assert np.allclose(got, closed) and doc["lds"]["value"]["banzhaf_uniform"]["kind"] == "store_baseline"
    # 3. the estimate-row variant is named for what it is; held-out subsets avoid the uniform rows too
    assert "banzhaf_on_estimate_rows" in doc["lds"]["value"] and "banzhaf_msr" not in doc["lds"]["value"]
    assert not set(doc["holdout"]["masks"]) & set(doc["banzhaf_uniform"]["masks"])


def test_cli_evaluate_json_writes_every_table(tmp_path, ray_address, game_env, contribshap):
    """The real CLI through the driver and Ray: `evaluate --json` prints the whole document on stdout."""
    import subprocess

    root = build_store(tmp_path / "store", target="games_eval:planted_additive", n=6, design="paired", budget=16,
                       methods=("kernelshap",))
    done = subprocess.run([*contribshap, "evaluate", str(root), "--json", "--n-subsets", "12", "--top-k", "0.2",
                           "--cf-replicates", "2", "--banzhaf-uniform", "--stratify-exclude", "p5",
                           "--address", ray_address], cwd=tmp_path, env=game_env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json.loads(done.stdout)  # progress lines went to stderr
    assert "value kernelshap: LDS 100.0" in done.stderr and "without p5" in done.stderr
    value = doc["lds"]["value"]
    assert {"kernelshap", "banzhaf_uniform", "banzhaf_on_estimate_rows", "planted_indicator", "random"} <= set(value)
    assert doc["lds_stratified"]["value"]["kernelshap"]["value"] == pytest.approx(100.0)
    assert doc["stratify"]["exclude"] == ["p5"] and doc["settings"]["counterfactual"] is True
    top = next(e for e in doc["counterfactual"]["value"]["kernelshap"] if e["action"] == "remove_top")
    assert top["removed"] == ["p0"] and top["n_seeds"] == 2  # p0 has the largest weight (4)
    sections = {r["section"] for r in read_plan(Store(root))}
    assert {"holdout", "counterfactual", "banzhaf_uniform"} <= sections
    assert json.loads((root / "estimates" / "evaluation.json").read_text())["lds"] == doc["lds"]


def test_run_evaluate_rejects_bad_settings_in_one_line(tmp_path):
    root = build_store(tmp_path / "store", target="games_eval:additive", n=4, budget=12, methods=("kernelshap",))
    with pytest.raises(ValueError, match=r"^n_subsets=2: LDS needs at least 3 held-out subsets; use e.g. 50; "
                                          r"mode='retrain': python games have no fine-tune mode; omit --mode$"):
        ev.run_evaluate(root, n_subsets=2, mode="retrain")
    (root / "estimates" / "estimates.json").unlink()
    (root / "config.yaml").rename(root / "config.yaml.bak")  # no config: nothing can reduce it
    with pytest.raises(FileNotFoundError, match=r"estimates.json does not exist; run `contribshap reduce"):
        load_estimates(root, reduce_if_missing=True)


# --- model baselines (torch) --------------------------------------------------------------------------------
@pytest.mark.slow
def test_trak_and_similarity_single_out_the_contributor_whose_images_were_generated():
    """Generated images = copies of contributor 0's images: every model baseline ranks it first."""
    import torch
    from contribshap.pipeline.config.diffusion import DiffusionGameConfig
    from contribshap.workers.model_baselines import projected_gradients, similarity_scores, trak_scores
    from contribshap.workers.models import build_model, build_scheduler
    from sklearn.datasets import load_digits

    config = DiffusionGameConfig.model_validate(
        {"kind": "diffusion", "data": {"source": "digits"}, "model": {"block_out_channels": [8, 16]}, "device": "cpu"}
    )
    model, scheduler = build_model(config.model, seed=0), build_scheduler(config.model)
    digits = load_digits()
    order = np.argsort(digits.target[:60], kind="stable")  # 3 contributors of mixed classes, 20 images each
    images = torch.tensor(digits.images[:60][order] / 8.0 - 1.0, dtype=torch.float32).unsqueeze(1)
    owner = np.arange(60) // 20
    generated = images[:8].clone()
    phi = projected_gradients(model, scheduler, images, dim=64, n_timesteps=4, seed=0)
    psi = projected_gradients(model, scheduler, generated, dim=64, n_timesteps=4, seed=0)
    assert phi.shape == (60, 64) and np.isfinite(phi).all()
    assert np.allclose(psi, phi[:8])  # the same image gives the same projected gradient (fixed t, eps, P)
    trak = trak_scores(phi, owner, psi, 3)
    assert int(np.argmax(trak)) == 0
    flat = images.reshape(60, -1).double().numpy()
    centre = flat.mean(axis=0)
    mean, best = similarity_scores(flat - centre, owner, generated.reshape(8, -1).double().numpy() - centre, 3)
    assert int(np.argmax(mean)) == 0 and best[0] == pytest.approx(1.0) and best[1] < 1.0
