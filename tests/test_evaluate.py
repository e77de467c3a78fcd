"""`contribshap evaluate` and the store baselines on constructed stores with known answers (no torch)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from contribshap.pipeline import evaluate as ev
from contribshap.pipeline.baselines import required_masks, store_baselines
from contribshap.pipeline.plan import read_plan
from contribshap.pipeline.readers import load_estimates
from contribshap.pipeline.store import Store, mask_to_str
from games_eval import WEIGHTS, additive, build_store


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
    from contribshap.pipeline.sampling import sample_coalitions

    n = 8
    masks = np.asarray(sample_coalitions(n, 200, "uniform", seed=0), dtype=bool)
    values = np.array([additive(m)["value"] for m in masks])
    out = store_baselines(masks, values, 10.0, 10.0 + WEIGHTS[:n].sum(), ["banzhaf_msr", "datamodel"])
    assert np.allclose(out["banzhaf_msr"].value, WEIGHTS[:n], atol=0.6)
    assert np.allclose(out["datamodel"].value, WEIGHTS[:n], atol=0.05)


# --- run_evaluate on a store (held-out evaluations in-process, or through the real driver) -----------------
def _in_process(monkeypatch):
    """Replace the driver call by direct game evaluation (python games only); counts calls."""
    calls = []

    def fake(cfg, store, masks, *, section, seeds, mode, address, progress, props):
        from contribshap.pipeline.games import build_game

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
    doc = ev.run_evaluate(root, n_subsets=30, counterfactual=True, top_k=(0.2,))
    printed = capsys.readouterr().out
    # 1. exact-in-the-limit estimates of an additive game: LDS 100 for kernelshap, LOO and add-one-in
    for prop in ("value", "loss"):
        for method in ("kernelshap", "loo", "add_one_in"):
            assert doc["lds"][prop][method]["value"] == pytest.approx(100.0, abs=1e-6), (prop, method)
        for method in ("banzhaf_msr", "datamodel"):  # regressions on a paired (not uniform) design
            assert doc["lds"][prop][method]["value"] > 80.0, (prop, method)
        assert f"{prop} kernelshap: LDS 100.0 [100.0, 100.0]" in printed
    assert abs(doc["lds"]["value"]["random"]["value"]) < 100.0
    # 2. the driver saw the LOO/singleton rows once, then held-out and counterfactual masks
    assert [c[0] for c in calls] == ["counterfactual", "holdout", "counterfactual"]
    assert calls[0][1] == len(probes - planned) > 0  # the LOO / singleton rows the 16-row plan lacks
    # 3. counterfactual: removing the top-20% (1 contributor, p0 with w=4) lowers `value` by 4 / v_full
    v_full = 10.0 + WEIGHTS[:6].sum()
    top = next(e for e in doc["counterfactual"]["value"]["kernelshap"] if e["action"] == "remove_top")
    assert top["removed"] == ["p0"] and top["value"] == pytest.approx(-WEIGHTS[0] / v_full)
    bottom = next(e for e in doc["counterfactual"]["value"]["kernelshap"] if e["action"] == "remove_bottom")
    assert bottom["removed"] == ["p1"] and bottom["value"] == pytest.approx(-WEIGHTS[1] / v_full)
    # 4. files: strict JSON and a Parquet long table
    saved = json.loads((root / "estimates" / "evaluation.json").read_text())
    assert saved["settings"]["n_subsets"] == 30 and len(saved["holdout"]["masks"]) == 20  # C(6, 3)
    assert "only 20 distinct held-out subsets exist for n=6, alpha=0.5" in saved["notes"]
    import pyarrow.parquet as pq

    table = pq.read_table(root / "estimates" / "evaluation.parquet").to_pylist()
    assert {r["metric"] for r in table} == {"lds", "remove_top", "remove_bottom"}


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
    from contribshap.pipeline.diffusion_config import DiffusionGameConfig
    from contribshap.workers.baselines import projected_gradients, similarity_scores, trak_scores
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
