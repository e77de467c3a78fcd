"""The overlap audit finds planted duplicates, copies and subsets; a split (disjoint images) shares nothing;
``merge_overlapping`` joins copied identities; ``check`` shows it all; the text and HTML forms read the table."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
from contribshap.pipeline.contracts.game import Contributor
from contribshap.pipeline.products.overlap import data_summary_lines, overlap_html, overlap_lines
from contribshap.workers.audit import (
    dhash,
    folder_file_summary,
    merge_contributors,
    merge_groups,
    overlap_table,
)


def _players(*names: str) -> list[Contributor]:
    return [Contributor(n, n, 0) for n in names]


def _images(n: int, seed: int, side: int = 8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(-1.0, 1.0, size=(n, 1, side, side)).astype(np.float32)


def test_dhash_keeps_brightness_changes_and_separates_different_images():
    images = _images(20, 0, side=16)
    brighter = np.clip(images * 0.8 + 0.1, -1, 1)
    assert (dhash(images) == dhash(brighter)).all()
    distances = np.bitwise_count(dhash(images)[:, None] ^ dhash(images)[None, :])
    assert distances[~np.eye(20, dtype=bool)].min() > 6


def test_planted_copy_near_duplicates_and_split_on_small_tensors():
    rng = np.random.default_rng(1)
    own = _images(30, 2)                       # a: 30 images
    split = _images(30, 3)                     # s1, s2, s3: 10 disjoint images each (a split)
    copy_of_a = own[:12].copy()                # c: 12 exact copies of a's images + 8 own images
    near_of_a = np.clip(own[12:20] + rng.normal(0, 0.02, size=own[12:20].shape), -1, 1).astype(np.float32)
    images = np.concatenate([own, split, copy_of_a, _images(8, 4), near_of_a])
    owner = np.concatenate([np.zeros(30), np.repeat([1, 2, 3], 10), np.full(20, 4), np.full(8, 5)]).astype(np.int64)
    players = _players("a", "s1", "s2", "s3", "c", "n")
    table = overlap_table(images, owner, players)
    exact, near = np.asarray(table["exact"]), np.asarray(table["near"])
    assert exact[4, 0] == 12 and exact[0, 4] == 12          # the planted copies, seen from both sides
    assert near[5, 0] == 8 and exact[5, 0] == 0             # jittered copies: near, not exact
    assert near[0, 5] == 8 and near[0, 4] == 12
    assert near[1:4, 1:4].sum() == 0 and near[1:4].sum() == 0  # the split identities share nothing
    assert np.trace(near) == 0
    pairs = {(p["a"], p["b"]): p for p in table["pairs"]}
    assert set(pairs) == {("a", "c"), ("a", "n")}
    assert pairs[("a", "c")]["fraction_b"] == pytest.approx(12 / 20)
    # merge: c (60% of its images are a's) and n (100%) join a at threshold 0.5; at 0.7 only n does
    assert merge_groups(np.asarray(table["near_fraction"]), 0.5) == [[0, 4, 5], [1], [2], [3]]
    assert merge_groups(np.asarray(table["near_fraction"]), 0.7) == [[0, 5], [1], [2], [3], [4]]
    new_owner, merged = merge_contributors(owner, players, [[0, 5], [1], [2], [3], [4]])
    assert [c.id for c in merged] == ["a+n", "s1", "s2", "s3", "c"]
    assert (new_owner[owner == 5] == 0).all() and (new_owner[owner == 4] == 4).all()
    # a copy inside one contributor's own set counts on the diagonal
    doubled = overlap_table(np.concatenate([own, own[:3]]), np.zeros(33, np.int64), _players("a"))
    assert doubled["exact"][0][0] == 6 and doubled["pairs"] == []


def test_feature_space_overlap_counts_similar_features():
    images = _images(6, 5)
    features = np.array([[1, 0], [0, 1], [1, 1], [1, 0.001], [0, 1], [-1, 0]], dtype=float)
    table = overlap_table(images, np.array([0, 0, 0, 1, 1, 1]), _players("a", "b"), features=features)
    near = np.asarray(table["embedding"]["near"])
    assert near[0, 1] == 2 and near[1, 0] == 2 and near[0, 0] == 0


def test_demo_like_digits_source_copycat_and_excerpt():
    from contribshap.pipeline.config.diffusion import DigitsSource
    from contribshap.workers.data import load_dataset, load_index

    spec = {"source": "digits", "holdout_fraction": 0.3, "contributors": [
        {"name": "large-a", "n_images": 100}, {"name": "medium-a", "n_images": 50}, {"name": "small", "n_images": 20},
        {"name": "copycat", "kind": "copy", "of": "medium-a"},
        {"name": "excerpt", "kind": "subset", "of": "large-a", "n_images": 30},
        {"name": "dups", "kind": "duplicates", "n_images": 40, "n_sources": 4, "jitter": 0.05}]}
    dataset = load_dataset(DigitsSource.model_validate(spec))
    ids = [c.id for c in dataset.contributors]
    table = overlap_table(dataset.images.numpy(), dataset.contributor_index.numpy(), dataset.contributors)
    pairs = {frozenset((p["a"], p["b"])): p for p in table["pairs"]}
    assert set(pairs) == {frozenset(("medium-a", "copycat")), frozenset(("large-a", "excerpt"))}
    copy = pairs[frozenset(("medium-a", "copycat"))]
    assert copy["exact_a"] == copy["exact_b"] == 50 and copy["fraction_a"] == copy["fraction_b"] == 1.0
    sub = pairs[frozenset(("large-a", "excerpt"))]
    assert (sub["near_a"], sub["near_b"]) == (30, 30) and (sub["fraction_a"], sub["fraction_b"]) == (0.3, 1.0)
    assert table["near"][ids.index("dups")][ids.index("dups")] >= 36  # jittered copies of 4 sources: near each other

    merged = DigitsSource.model_validate({**spec, "merge_overlapping": {"threshold": 0.5}})
    owner, players = load_index(merged)
    assert [c.id for c in players] == ["large-a+excerpt", "medium-a+copycat", "small", "dups"]
    assert np.bincount(owner).tolist() == [130, 100, 20, 40]
    # the merge is opt-in: without it the dump (and every artifact hash) is unchanged
    assert "merge_overlapping" not in DigitsSource.model_validate(spec).model_dump()


def test_folder_file_summary_finds_unreadable_and_identical_files(tmp_path):
    from PIL import Image

    Image.new("L", (8, 8), 10).save(tmp_path / "x.png")
    (tmp_path / "y.png").write_bytes((tmp_path / "x.png").read_bytes())
    Image.new("L", (8, 8), 200).save(tmp_path / "z.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    (tmp_path / "contributors.csv").write_text("file,contributor,label\nx.png,p,0\ny.png,q,1\nz.png,q,1\n"
                                               "bad.png,q,0\nmissing.png,p,0\n")
    summary = folder_file_summary(tmp_path / "contributors.csv", tmp_path, label_column="label")
    assert summary["contributors"] == [{"id": "p", "n_images": 2, "n_classes": 1},
                                       {"id": "q", "n_images": 3, "n_classes": 2}]
    assert dict(summary["unreadable"]) == {"bad.png": "UnidentifiedImageError", "missing.png": "missing"}
    assert summary["duplicate_files"] == [["x.png", "y.png"]]
    assert summary["shared_files"] == [(["x.png", "y.png"], ["p", "q"])]
    lines = data_summary_lines({"files": summary, "contributors": None, "skipped": "unreadable files"})
    assert lines[0] == "files: 5 listed, 2 unreadable, 2 in 1 group(s) of byte-identical files"


def test_text_and_html_forms():
    images = _images(10, 6)
    table = overlap_table(np.concatenate([images, images[:4]]), np.array([0] * 10 + [1] * 4), _players("a", "b"))
    lines = overlap_lines(table)
    assert lines[1] == "  a <-> b: 4/10 of a (40%, 4 exact), 4/4 of b (100%, 4 exact)"
    page = overlap_html(table)
    assert "<td>40% (4)</td>" in page and "<td>100% (4)</td>" in page
    assert overlap_lines(None) == ["overlap: no audit yet (prepare writes it)"]
    alone = overlap_table(images, np.zeros(10, np.int64), _players("a"))
    assert overlap_lines(alone)[0].startswith("overlap: no images shared") and "No images are shared" in overlap_html(alone)


def test_check_prints_the_demo_overlap(contribshap):
    from contribshap.pipeline.products.cli import shipped_config

    done = subprocess.run([*contribshap, "check", str(shipped_config("demo.yaml"))], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "  medium-a <-> copycat: 120/120 of medium-a (100%, 120 exact), 120/120 of copycat (100%, 120 exact)" \
        in done.stdout
    assert "  large-a <-> excerpt: 60/250 of large-a (24%, 60 exact), 60/60 of excerpt (100%, 60 exact)" in done.stdout
    assert "overlap: 2 pair(s)" in done.stdout


def test_status_and_report_show_the_prepared_overlap(tmp_path):
    import json

    from contribshap.pipeline.products.report import build_report
    from contribshap.pipeline.products.status import store_status
    from contribshap.pipeline.storage.store import Store
    from games_eval import build_store

    root = build_store(tmp_path / "store", target="games_eval:additive", n=3, design="exact", budget=8,
                       methods=("kernelshap",))
    ids = [c["id"] for c in Store(root).read_manifest()["contributors"]]
    assert store_status(root)["overlap"] is None and 'id="overlap"' not in build_report(root).read_text()
    images = _images(6, 7)
    table = overlap_table(np.concatenate([images, images[:2]]), np.array([0, 0, 1, 1, 2, 2, 2, 2]),
                          [Contributor(i, i, 0) for i in ids])
    (root / "artifacts" / "overlap-0123456789ab").mkdir(parents=True)
    (root / "artifacts" / "overlap-0123456789ab" / "overlap.json").write_text(json.dumps(table))
    pairs = store_status(root)["overlap"]["pairs"]
    assert [(p["a"], p["b"], p["near_a"], p["near_b"]) for p in pairs] == [(ids[0], ids[2], 2, 2)]
    page = build_report(root).read_text()
    assert 'id="overlap"' in page and "<td>50% (2)</td>" in page and "<td>100% (2)</td>" in page


def test_check_summary_names_the_merged_players():
    from contribshap.pipeline.config.diffusion import DiffusionGameConfig
    from contribshap.workers.data_summary import data_summary

    game = DiffusionGameConfig.model_validate({"kind": "diffusion", "data": {
        "source": "digits", "merge_overlapping": {"threshold": 0.5}, "contributors": [
            {"name": "a", "n_images": 40}, {"name": "b", "n_images": 40}, {"name": "copier", "kind": "copy", "of": "a"}]}})
    assert game.n_contributors() is None  # how many players remain depends on the images
    summary = data_summary(game)
    assert summary["merged"] == {"threshold": 0.5, "players": ["a+copier", "b"]}
    assert [p["id"] for p in summary["contributors"]] == ["a", "b", "copier"]  # the audit sees them unmerged
    assert data_summary_lines(summary)[-1] == "merge_overlapping (threshold 0.5): 2 players; merged: a+copier"
