"""The reduced demo end to end through the real CLI: Ray, prepare, store, reducer (configs/demo_ci.yaml)."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_demo_ci_runs_end_to_end(tmp_path, ray_address, game_env, contribshap):
    import pyarrow.parquet as pq

    store = tmp_path / "demo_ci"
    # 1. contribshap run: prepare (one Ray task), plan, dispatch, reduce.
    done = subprocess.run([*contribshap, "run", str(REPO_ROOT / "configs" / "demo_ci.yaml"), "--store", str(store),
                           "--address", ray_address, "--no-progress"],
                          cwd=tmp_path, env=game_env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "pid=" not in done.stderr, done.stderr[-3000:]  # no worker line (bar) forwarded by Ray: progress is off

    # 2. The store: manifest with the 11 contributors, one ok row per planned coalition, finite properties.
    manifest = json.loads((store / "manifest.json").read_text())
    ids = [c["id"] for c in manifest["contributors"]]
    assert ids[:10] == [f"class-{d}" for d in range(10)] and ids[10] == "planted-noise"
    rows = [pq.read_table(path).to_pylist()[0] for path in (store / "evals").rglob("*.parquet")]
    assert len(rows) >= 16 and all(row["status"] == "ok" for row in rows)
    properties = ["fid", "log_fid", "kid", "inception_score", "diversity", "quality"]
    assert all(math.isfinite(row[name]) for row in rows for name in properties)
    assert all(row["finetune_s"] > 0 for row in rows if row["size"] > 0)
    assert len(list((store / "artifacts").glob("recovered-*"))) == 1

    # 3. The reducer's document has a value and CI per contributor and property.
    reduced = subprocess.run([*contribshap, "reduce", str(store), "--json"], cwd=tmp_path, env=game_env,
                             capture_output=True, text=True, timeout=300)
    assert reduced.returncode == 0, reduced.stderr[-3000:]
    document = json.loads(reduced.stdout)
    text = json.dumps(document)
    assert "planted-noise" in text and all(name in text for name in properties)
