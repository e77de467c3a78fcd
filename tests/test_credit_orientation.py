"""Credit ranked by value through the real CLI: a lower-is-better property (``fid`` by its built-in
direction, ``loss`` by the config's ``directions``) is sign-flipped once, ranked 1 = most valuable in the
printed table and in table.csv, harmful contributors get their own section, the JSON keeps the raw value;
``reduce --shares`` splits a pool that sums exactly, with a cap, and writes shares.csv/parquet."""

from __future__ import annotations

import csv
import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

W = [3.0, -2.0, 1.0, 0.5, 2.0]  # player 1 is harmful (its data raises fid), player 0 the most valuable

GAME = '''
import numpy as np
W = np.array({w})
def game(mask):
    total = float(W[np.asarray(mask, dtype=bool)].sum())
    return {{"fid": 100.0 - total, "loss": 50.0 - 2.0 * total, "value": 10.0 + total}}
'''


def _cli(command: list[str], args: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([*command, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=180)


@pytest.mark.slow
def test_lower_is_better_ranks_by_benefit_through_the_cli(tmp_path, contribshap, game_env, ray_address):
    (tmp_path / "oriented_game.py").write_text(GAME.format(w=W))
    config = {"name": "oriented", "store": "st", "game": {"kind": "python", "target": "oriented_game:game",
                                                          "n_players": 5, "names": ["best", "bad", "c", "d", "e"]},
              "design": {"kind": "exact"}, "estimators": ["kernelshap"], "directions": {"loss": "lower"}}
    (tmp_path / "oriented.yaml").write_text(yaml.safe_dump(config))
    env = {**game_env, "PYTHONPATH": f"{tmp_path}:{game_env.get('PYTHONPATH', '')}", "COLUMNS": "200"}
    done = _cli(contribshap, ["run", "oriented.yaml", "--address", ray_address, "--no-progress"], tmp_path, env)
    assert done.returncode == 0, done.stderr
    # 1. the printed table: the direction said once, rank 1 = the most valuable, the harmful one apart
    reduced = _cli(contribshap, ["reduce", "st"], tmp_path, env)
    assert reduced.returncode == 0, reduced.stderr
    fid_part = reduced.stderr[reduced.stderr.index("fid · kernelshap"):reduced.stderr.index("loss · kernelshap")]
    assert "fid: lower is better; credit = reduction of fid" in fid_part
    rows = [line for line in fid_part.splitlines() if "│" in line and "contributor" not in line]
    first = [cell.strip() for cell in rows[0].split("│") if cell.strip()]
    assert first[0] == "best (p0)" and float(first[1]) == pytest.approx(3.0) and first[-1] == "1"
    harmful = fid_part[fid_part.index("harmful for fid"):]
    assert "bad (p1)" in harmful and "bad (p1)" not in fid_part[:fid_part.index("harmful for fid")]
    assert "loss: lower is better; credit = reduction of loss" in reduced.stderr
    assert "value: higher is better; credit = increase of value" in reduced.stderr
    # 2. the JSON keeps the raw Shapley value next to the credit and the direction
    doc = json.loads(_cli(contribshap, ["reduce", "st", "--json"], tmp_path, env).stdout)
    fid = doc["fid"]["kernelshap"]
    assert fid["direction"] == "lower" and doc["value"]["kernelshap"]["direction"] == "higher"
    assert doc["loss"]["kernelshap"]["direction"] == "lower"
    np.testing.assert_allclose([c["value"] for c in fid["contributors"]], -np.array(W), atol=1e-9)
    np.testing.assert_allclose([c["credit"] for c in fid["contributors"]], W, atol=1e-9)
    np.testing.assert_allclose([c["credit"] for c in doc["loss"]["kernelshap"]["contributors"]], 2 * np.array(W),
                               atol=1e-9)
    assert [c["harmful"] for c in fid["contributors"]] == [False, True, False, False, False]
    # 3. table.csv of the report: ranked by credit, raw value kept, the harmful one flagged
    report = _cli(contribshap, ["report", "st"], tmp_path, env)
    assert report.returncode == 0, report.stderr
    with (tmp_path / "st" / "report" / "table.csv").open() as fh:
        table = [r for r in csv.DictReader(fh) if r["property"] == "fid"]
    ranked = sorted(table, key=lambda r: int(r["rank"]))
    assert [r["contributor_id"] for r in ranked] == [f"p{i}" for i in np.argsort(-np.array(W))]
    assert ranked[0]["direction"] == "lower" and float(ranked[0]["credit"]) == pytest.approx(3.0)
    assert float(ranked[0]["value"]) == pytest.approx(-3.0) and ranked[-1]["harmful"] == "True"
    page = (tmp_path / "st" / "report" / "index.html").read_text()
    assert "Harmful for fid" in page and "fid: lower is better; credit = reduction of fid" in page
    assert page.index("Most valuable for fid") < page.index("How to read this")
    # 4. payout shares of a stated pool with a cap: exact sum, cap held, the harmful contributor unpaid
    shared = _cli(contribshap, ["reduce", "st", "--shares", "--pool", "1000", "--cap", "0.4"], tmp_path, env)
    assert shared.returncode == 0, shared.stderr
    assert "payout shares · fid" in shared.stderr and "arXiv 2404.13964" in shared.stderr
    with (tmp_path / "st" / "estimates" / "shares.csv").open() as fh:
        shares = [r for r in csv.DictReader(fh) if r["property"] == "fid"]
    amounts = [float(r["share"]) for r in shares]
    assert math.fsum(amounts) == pytest.approx(1000.0, abs=1e-9) and max(amounts) <= 400.0 + 1e-9
    assert amounts[1] == 0.0 and amounts[0] == pytest.approx(400.0)  # capped; the excess went to c, d, e
    assert (tmp_path / "st" / "estimates" / "shares.parquet").is_file()
    # 5. a bad rule is one line, exit 2; the rule's options need --shares
    bad = _cli(contribshap, ["reduce", "st", "--shares", "--cap", "0.1"], tmp_path, env)
    assert bad.returncode == 2 and "cap" in bad.stderr and "Traceback" not in bad.stderr
    alone = _cli(contribshap, ["reduce", "st", "--pool", "5"], tmp_path, env)
    assert alone.returncode == 2 and "add --shares" in alone.stderr


def test_directions_come_from_one_table_and_the_config():
    from contribshap.pipeline.config.diffusion import BUILTIN_PROPERTIES, PROPERTY_DIRECTIONS
    from contribshap.pipeline.config.schema import parse_config
    from contribshap.pipeline.contracts.errors import ConfigError
    from contribshap.pipeline.products.credit import credit_fields, direction_note

    assert set(PROPERTY_DIRECTIONS) == set(BUILTIN_PROPERTIES)
    raw = {"game": {"kind": "python", "target": "m:f", "n_players": 3}, "design": {"kind": "exact"}}
    cfg = parse_config({**raw, "directions": {"cost": "lower", "fid": "higher"}}, check_paths=False)
    assert (cfg.direction("cost"), cfg.direction("fid"), cfg.direction("kid"), cfg.direction("other")) == (
        "lower", "higher", "lower", "higher")
    with pytest.raises(ConfigError, match="directions"):
        parse_config({**raw, "directions": {"cost": "down"}}, check_paths=False)
    # the flip: credit = -value, the interval flipped and ordered, harmful when wholly below 0
    assert credit_fields(5.0, 1.0, 9.0, True, "lower") == {"credit": -5.0, "credit_low": -9.0, "credit_high": -1.0,
                                                          "harmful": True}
    assert credit_fields(5.0, -1.0, 9.0, True, "higher")["harmful"] is False
    assert credit_fields(5.0, None, None, False, "lower") == {"credit": -5.0, "credit_low": None, "credit_high": None,
                                                             "harmful": False}
    assert direction_note("fid", "lower") == "fid: lower is better; credit = reduction of fid"
