"""The HTML report renders from a small store; every image it references exists; the page has its parts.

Plus one end-to-end run through the real CLI and Ray (python game): run -> evaluate -> report.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from contribshap.pipeline.products import evaluate as ev
from contribshap.pipeline.products.report import (
    build_report,
    convergence_curve,
    convergence_lines,
    cost_summary,
    headline,
    ordered,
)
from contribshap.pipeline.storage.plan import read_plan
from contribshap.pipeline.storage.store import Store
from games_eval import build_store

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class _Page(HTMLParser):
    """Collects tags, image sources, links and table cells (and checks tags are balanced)."""

    VOID = frozenset({"meta", "img", "br", "hr", "link", "input"})

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.images: list[str] = []
        self.links: list[str] = []
        self.stack: list[str] = []
        self.cells: list[str] = []
        self._in_cell = False

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
            assert attrs.get("alt"), "every image has alt text"
        if tag == "a" and "href" in attrs:
            self.links.append(attrs["href"])
        if tag in ("td", "th"):
            self._in_cell = True
            self.cells.append("")
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"unbalanced </{tag}> (open: {self.stack[-3:]})"
        self.stack.pop()
        if tag in ("td", "th"):
            self._in_cell = False

    def handle_data(self, data):
        if self._in_cell:
            self.cells[-1] += data


def _parse(index: Path) -> _Page:
    page = _Page()
    page.feed(index.read_text())
    page.close()
    assert page.stack == [], f"unclosed tags: {page.stack}"
    return page


def _fake_evaluation(root: Path) -> None:
    """Add estimates/evaluation.json by running run_evaluate with the game evaluated in-process."""

    def in_process(cfg, store, masks, *, section, seeds, mode, address, progress, props):
        from contribshap.pipeline.games.factory import build_game

        game = build_game(cfg, store)
        out = {p: np.full((len(seeds), len(masks)), math.nan) for p in props}
        for j, mask in enumerate(masks):
            values = game.evaluate(mask, replicate=0, seed=0).values
            for p in props:
                out[p][:, j] = values[p]
        return out

    original = ev._evaluate
    ev._evaluate = in_process
    try:
        ev.run_evaluate(root, n_subsets=15, counterfactual=True, top_k=(0.2,), progress=False)
    finally:
        ev._evaluate = original


def test_report_renders_and_every_referenced_file_exists(tmp_path):
    root = build_store(tmp_path / "store", n=6, design="paired", budget=40, methods=("kernelshap", "banzhaf_msr"))
    _fake_evaluation(root)
    index = build_report(root)
    assert index == root / "report" / "index.html"
    page = _parse(index)
    # 1. structure: a doctype'd page with tables, per-property plots, the cost section
    assert index.read_text().startswith("<!DOCTYPE html>")
    assert page.tags.count("table") >= 4 and "h1" in page.tags
    for prop in ("value", "loss"):
        for kind in ("ranking", "convergence", "lds"):
            assert f"{kind}_{prop}.png" in page.images
    assert "cost.png" in page.images
    # 2. every referenced image / link is a local file that exists (no CDN, no external asset)
    for src in page.images + [link for link in page.links if not link.startswith("#")]:
        assert "://" not in src and not src.startswith("//")
        assert (index.parent / src).is_file(), src
    for src in page.images:
        assert (index.parent / src).read_bytes()[:8] == PNG_MAGIC
    assert "<script" not in index.read_text() and "http" not in index.read_text()
    # 3. the table cells carry the ranked contributors and the LDS rows
    assert "kernelshap" in page.cells and "random" in page.cells and "remove_top" in page.cells
    # 4. the samples section says in one line why it is skipped for a python game; no contributor images
    assert "Skipped: a python game has no images." in index.read_text()
    assert not any(src.startswith(("thumb_", "samples_")) for src in page.images)
    # 5. how to read it, and one card per contributor ranked by the headline (value, kernelshap: config order)
    text = index.read_text()
    assert "How to read this" in text and "not identified" in text
    assert text.count('<div class="card">') == 6 and "kernelshap credit for <b>value</b>" in text


def test_table_csv_and_parquet_hold_the_final_ranking(tmp_path):
    import pyarrow.parquet as pq

    root = build_store(tmp_path / "store", target="games_eval:additive", n=5, design="exact", budget=32,
                       methods=("kernelshap",))
    index = build_report(root, out=tmp_path / "out")
    assert index == tmp_path / "out" / "index.html"
    with (tmp_path / "out" / "table.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    table = pq.read_table(tmp_path / "out" / "table.parquet").to_pylist()
    assert len(rows) == len(table) == 2 * 5  # 2 properties x 5 contributors x 1 method
    value_rows = [r for r in table if r["property"] == "value"]
    # exact design on an additive game: kernelshap = the weights, ranked 1 = largest (p0, w = 4)
    from games_eval import WEIGHTS

    assert [r["contributor_id"] for r in sorted(value_rows, key=lambda r: r["rank"])] == [
        f"p{i}" for i in np.argsort(-WEIGHTS[:5])
    ]
    assert np.allclose(sorted(r["value"] for r in value_rows), sorted(WEIGHTS[:5]))
    # without evaluation.json the page says how to add the LDS section
    assert "run <code>contribshap evaluate STORE</code>" in index.read_text()


def test_convergence_and_cost_helpers_by_hand(tmp_path):
    from contribshap.pipeline.core.designs import sample_coalitions
    from games_eval import WEIGHTS, additive

    masks = np.asarray(sample_coalitions(6, 40, "paired", seed=0), dtype=bool)
    values = np.array([additive(m)["value"] for m in masks])
    curve = convergence_curve(masks, values, 10.0, 10.0 + WEIGHTS[:6].sum(), "kernelshap", n_points=5)
    assert curve["sizes"][-1] == 40 and len(curve["value"]) == len(curve["sizes"]) >= 3
    assert np.allclose(curve["value"][-1], WEIGHTS[:6])  # additive: exact at every prefix
    rows = {"main": [{"status": "ok", "finetune_s": 3600.0, "sample_s": 1800.0, "eval_s": 0.0, "wall_s": 5400.0,
                      "info": json.dumps({"device": "cpu"})},
                     {"status": "failed", "finetune_s": float("nan"), "sample_s": None, "eval_s": None,
                      "wall_s": 36.0, "info": None}]}
    (cost,) = cost_summary(rows, "main")
    assert cost["ok"] == 1 and cost["failed"] == 1 and cost["device"] == "cpu" and cost["role"] == "main"
    assert cost["finetune_h"] == pytest.approx(1.0) and cost["sample_h"] == pytest.approx(0.5)
    assert cost["wall_h"] == pytest.approx(1.51)


def test_run_order_and_convergence_legend():
    estimates = {"a": {"banzhaf_msr": {"contributors": []}, "kernelshap": {"contributors": []}},
                 "fid": {"kernelshap": {"contributors": []}}}
    # estimates.json sorts its keys; the report and the console follow the game's and the config's order
    lead = ordered(estimates, properties=["fid", "a"], methods=["kernelshap", "banzhaf_msr"])
    assert list(lead) == ["fid", "a"] and list(lead["a"]) == ["kernelshap", "banzhaf_msr"]
    assert headline(lead) == ("fid", "kernelshap") and headline({}) is None
    # every drawn convergence line has a legend entry: all of up to 12, else the 8 largest |credit|
    assert convergence_lines(np.arange(11.0)) == list(range(11))
    assert convergence_lines(np.arange(30.0) - 10) == list(range(22, 30))


def test_run_prints_one_summary_and_has_quiet_and_json_modes(tmp_path, monkeypatch, game_env, ray_address, capsys):
    """`run`: one summary with a credit table (a column per property) and the paths; --quiet; --json."""
    from contribshap.pipeline.products.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "additive.yaml").write_text(
        "name: summary\nstore: st\ngame: {kind: python, target: 'games_eval:additive', n_players: 4}\n"
        "design: {kind: exact}\nestimators: [kernelshap]\n")
    assert main(["run", "additive.yaml", "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert out == "" and "16 evaluated, 0 failed, 0 already done in 1 round(s)" in err
    header = next(line for line in err.splitlines() if "contributor" in line)
    assert header.split()[:4] == ["#", "contributor", "value", "value"] and header.split()[-1] == "loss"
    assert f"estimates {tmp_path / 'st' / 'estimates' / 'estimates.json'}" in err
    assert "report    contribshap report" in err  # `run` does not build the report; it says how
    assert main(["run", "additive.yaml", "--quiet"]) == 0
    assert capsys.readouterr() == (f"{tmp_path / 'st' / 'estimates' / 'estimates.json'}\n", "")
    assert main(["run", "additive.yaml", "--json"]) == 0
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert err == "" and doc["store"] == str(tmp_path / "st") and doc["already_done"] == 16
    assert (doc["evaluated"], doc["failed"], doc["report"]) == (0, 0, None)
    assert doc["estimates"].endswith("estimates.json") and doc["wall_s"] >= 0


@pytest.mark.slow
def test_cli_run_evaluate_report_end_to_end(tmp_path, ray_address):
    """The real CLI and a local Ray instance: run a python game, evaluate (LDS); then the report."""
    tests_dir = Path(__file__).parent
    config = tmp_path / "additive.yaml"
    store = tmp_path / "store"
    config.write_text(
        "name: eval-e2e\n"
        f"store: {store}\n"
        "game: {kind: python, target: 'games_eval:noisy_additive', n_players: 6}\n"
        "design: {kind: leverage, budget: 30, seed: 0}\n"
        "estimators: [kernelshap]\n"
        "ray: {local_num_cpus: 2}\n"
        "evaluation: {n_subsets: 12}\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{tests_dir}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    cli = [str(Path(sys.executable).parent / "contribshap")]

    def run(*args):
        done = subprocess.run(cli + list(args), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        return done

    run("run", str(config), "--no-progress", "--address", ray_address)  # the session's Ray (conftest)
    out = run("evaluate", str(store), "--no-progress", "--address", ray_address).stdout
    assert "value kernelshap: LDS" in out and "loss random: LDS" in out
    doc = json.loads((store / "estimates" / "evaluation.json").read_text())
    assert doc["lds"]["value"]["kernelshap"]["value"] > 90  # noisy additive game: near-perfect datamodel
    # held-out rows sit in their own plan section, apart from the estimator rows
    sections = {r["section"] for r in read_plan(Store(store))}
    assert {"endpoint", "estimate", "holdout"} <= sections
    index = build_report(store)  # in-process: the CLI `report` command is a thin wrapper around it
    page = _parse(index)
    assert "lds_value.png" in page.images and all((index.parent / s).is_file() for s in page.images)
