"""Bad input through the real CLI: one exact line, exit code 2, nothing in the store changed.

Damaged manifests, binary and duplicate-key configs, a store under a file, a read-only store and a full
disk (real mounts; skipped with the reason where mounting is not permitted), a lost plan, an evaluation
file copied over another, a store of another format version, temporary files of killed writers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import snapshot
from store_fixtures import GOOD, build_store, cli, copy_store, fill, full_disk, read_only


@pytest.fixture(scope="module")
def built(tmp_path_factory, ray_address) -> Path:
    return build_store(tmp_path_factory.mktemp("built"))


@pytest.fixture
def store(built, tmp_path) -> Path:
    return copy_store(built, tmp_path)


def _fails(done: subprocess.CompletedProcess, expected: str) -> None:
    assert (done.returncode, done.stderr) == (2, f"error: {expected}\n"), done.stderr


def _write_yaml(path: Path, **changes) -> Path:
    path.write_text(yaml.safe_dump({**GOOD, **changes}))
    return path


# --- 1. damaged manifests: one line offering repair --------------------------------------------------------
@pytest.mark.parametrize(("content", "problem"), [
    (b"\xff\xfe\x00{", "is unreadable (UnicodeDecodeError)"),
    (b"{not json", "is unreadable (JSONDecodeError)"),
    (b"[]", "is not a contribshap manifest (a JSON list, not an object)"),
    (b"null", "is not a contribshap manifest (JSON null, not an object)"),
    (b"{}", "is not a contribshap manifest (format_version is missing)"),
    (b'{"format_version": 1, "config_hash": "a", "plan_hash": "b", "contributors": 3}',
     "is not a contribshap manifest (contributors is not a list of {id, name} objects)"),
])
def test_a_damaged_manifest_is_one_line_that_offers_repair(store, contribshap, game_env, content, problem):
    (store / "manifest.json").write_bytes(content)
    before = snapshot(store)
    expected = (f"{store / 'manifest.json'} {problem}; run `contribshap repair {store}` to rebuild it from the "
                "config and the evaluations, or use a new store")
    for args in (["status", "st"], ["reduce", "st"]):
        _fails(cli(contribshap, *args, cwd=store.parent, env=game_env), expected)
    assert snapshot(store) == before


def test_run_on_a_damaged_manifest_says_the_same(store, contribshap, game_env):
    (store / "manifest.json").write_bytes(b"[]")
    (store / "config.yaml").unlink()
    before = snapshot(store)
    _fails(cli(contribshap, "run", "good.yaml", "--no-progress", cwd=store.parent, env=game_env),
           f"{store / 'manifest.json'} is not a contribshap manifest (a JSON list, not an object); run `contribshap "
           f"repair {store} --config CONFIG` to rebuild it from the config and the evaluations, or use a new store")
    assert snapshot(store) == before


def test_another_format_version_is_refused_by_name(store, contribshap, game_env):
    manifest = json.loads((store / "manifest.json").read_text())
    (store / "manifest.json").write_text(json.dumps({**manifest, "format_version": 99, "code_version": "9.0"}))
    before = snapshot(store)
    expected = (f"{store / 'manifest.json'} has format version 99, this contribshap reads format version 1; open "
                "the store with the contribshap that wrote it (code version 9.0) or use a new store")
    for args in (["status", "st"], ["repair", "st"]):
        _fails(cli(contribshap, *args, cwd=store.parent, env=game_env), expected)
    assert snapshot(store) == before


# --- 2. configs ------------------------------------------------------------------------------------------------
def test_bad_configs_are_one_line_before_any_work(tmp_path, contribshap, game_env):
    (tmp_path / "binary.yaml").write_bytes(b"name: x\n\x89PNG\r\n\x1a\n\xff")
    (tmp_path / "twice.yaml").write_text(
        "name: a\nstore: st\ngame:\n  kind: python\n  target: games_pipeline:airport\n  n_players: 4\n"
        "  n_players: 5\ndesign: {kind: exact}\nname: b\n"
    )
    _write_yaml(tmp_path / "one.yaml", game={**GOOD["game"], "n_players": 1})
    _write_yaml(tmp_path / "bool.yaml", game={**GOOD["game"], "n_players": True})
    (tmp_path / "afile").write_text("not a folder")
    _write_yaml(tmp_path / "under.yaml", store="afile/st")
    under = tmp_path / "afile" / "st"
    cases = [
        ("binary.yaml", "binary.yaml: not a text file (byte 8 is not UTF-8); pass a YAML config saved as UTF-8"),
        ("twice.yaml", "twice.yaml: n_players: key given twice (lines 6 and 7); keep one | name: key given twice "
                       "(lines 1 and 9); keep one"),
        ("one.yaml", "one.yaml: game.n_players: got 1; a game needs at least 2 contributors, use n_players >= 2"),
        ("bool.yaml", "bool.yaml: game.n_players: got True; use a whole number of contributors >= 2"),
        ("under.yaml", f"under.yaml: store: {under} cannot be created: {tmp_path / 'afile'} is a file, not a "
                       "folder; set store to a path outside it"),
    ]
    for name, expected in cases:
        _fails(cli(contribshap, "check", name, cwd=tmp_path, env=game_env), expected)
    for name, expected in cases[:4]:  # run refuses them the same way, before touching a store
        _fails(cli(contribshap, "run", name, cwd=tmp_path, env=game_env), expected)
    _fails(cli(contribshap, "run", "under.yaml", cwd=tmp_path, env=game_env),
           f"store {under} cannot be created: {tmp_path / 'afile'} is a file, not a folder; set store to a path "
           "outside it")
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".yaml")) == ["afile"]


# --- 3. a read-only store and a full disk ----------------------------------------------------------------------
def test_a_read_only_store(store, contribshap, game_env):
    _write_yaml(store.parent / "ro.yaml")
    before = snapshot(store)
    with read_only(store):
        _fails(cli(contribshap, "reduce", "st", cwd=store.parent, env=game_env),
               f"cannot write {store / 'estimates' / 'estimates.json'}: read-only file system; make it writable, "
               "or copy the store to a writable folder and use the copy")
        _fails(cli(contribshap, "check", "ro.yaml", cwd=store.parent, env=game_env),
               f"ro.yaml: store: {store} is not writable (read-only file system); set store to a writable folder")
        _fails(cli(contribshap, "run", "ro.yaml", "--no-progress", cwd=store.parent, env=game_env),
               f"store {store} is not writable (read-only file system); set store to a writable folder")
        assert cli(contribshap, "status", "st", cwd=store.parent, env=game_env).returncode == 0
    assert snapshot(store) == before


def test_a_full_disk(built, tmp_path, contribshap, game_env):
    with full_disk(tmp_path / "disk") as disk:
        store = copy_store(built, disk)
        shutil.move(disk / "good.yaml", tmp_path / "good.yaml")
        fill(disk / "filler")
        before = snapshot(store)
        expected = ("no space left on the device of {}; free space there and run the same command again (what the "
                    "store already holds is kept)")
        _fails(cli(contribshap, "reduce", str(store), cwd=tmp_path, env=game_env),
               expected.format(store / "estimates" / "estimates.json"))
        _fails(cli(contribshap, "run", "good.yaml", "--store", str(store), "--no-progress", cwd=tmp_path, env=game_env),
               expected.format(store / "driver.lock"))
        assert snapshot(store) == before  # no partial or temporary file left
        (disk / "filler").unlink()
        assert cli(contribshap, "reduce", str(store), cwd=tmp_path, env=game_env).returncode == 0


# --- 4. store integrity -------------------------------------------------------------------------------------
def test_a_lost_plan_is_never_reported_as_finished(store, contribshap, game_env):
    (store / "plan.parquet").unlink()
    before = snapshot(store)
    expected = (f"{store / 'plan.parquet'} is missing but the store holds 16 evaluation file(s); run `contribshap "
                f"repair {store}` to rebuild the plan from the config (nothing is evaluated again)")
    for args in (["status", "st"], ["status", "st", "--json"], ["reduce", "st"], ["run", "good.yaml", "--no-progress"]):
        _fails(cli(contribshap, *args, cwd=store.parent, env=game_env), expected)
    assert snapshot(store) == before


def test_an_evaluation_copied_over_another_is_counted_once(store, contribshap, game_env):
    folder = next((store / "evals").iterdir())
    full = json.loads((store / "manifest.json").read_text())
    from contribshap.pipeline.contracts.keys import key_of_mask

    ids = [c["id"] for c in full["contributors"]]
    source = folder / f"{key_of_mask([True] * 4, ids)}-r0.parquet"
    target = folder / f"{key_of_mask([True, False, False, False], ids)}-r0.parquet"
    shutil.copy(source, target)
    done = cli(contribshap, "reduce", "st", "--method", "kernelshap", "--json", cwd=store.parent, env=game_env)
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith(f"warning: skipped 1 evaluation file(s) in {folder} holding another evaluation's "
                                  f"row (copied over?): {target.name} (they will be run again)\n")
    assert json.loads(done.stdout)["cost"]["kernelshap"]["n_evaluations"] == 15  # not 16 with the full one twice
    status = cli(contribshap, "status", "st", cwd=store.parent, env=game_env)
    assert "ok 15, failed 0, remaining 1" in status.stdout
    assert f"unreadable files (will be re-run): {target.name}" in status.stdout


def test_temporary_files_of_killed_writers_are_removed_by_the_next_run(store, contribshap, game_env):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    folder = next((store / "evals").iterdir())
    old = time.time() - 3600
    stale = [folder / f".abc-r0.parquet.tmp-{dead.pid}", store / f".manifest.json.tmp-{dead.pid}",
             store / "artifacts" / f".ckpt.tmp-{dead.pid}"]
    kept = [folder / f".young-r0.parquet.tmp-{dead.pid}", folder / f".live-r0.parquet.tmp-{os.getpid()}"]
    stale[2].mkdir(parents=True)
    (stale[2] / "weights.bin").write_bytes(b"partial")
    for path in [*stale[:2], *kept]:
        path.write_bytes(b"partial")
    for path in [*stale, kept[1]]:
        os.utime(path, (old, old))
    done = cli(contribshap, "run", "good.yaml", "--no-progress", cwd=store.parent, env=game_env)
    assert done.returncode == 0, done.stderr
    assert "0 evaluated, 0 failed, 16 already done" in done.stderr
    assert [p.exists() for p in stale] == [False] * 3
    assert [p.exists() for p in kept] == [True, True]  # a young file (a writer elsewhere), a live pid


def test_a_disk_that_fills_during_a_run_stops_it_in_one_line_and_the_run_resumes(tmp_path, contribshap, game_env,
                                                                                 ray_address):
    import re

    with full_disk(tmp_path / "disk", size="192k") as disk:
        raw = {**GOOD, "store": str(disk / "st"), "game": {**GOOD["game"], "n_players": 8},
               "design": {"kind": "leverage", "budget": 120}, "estimators": ["kernelshap"]}
        (tmp_path / "big.yaml").write_text(yaml.safe_dump(raw))
        args = ["run", "big.yaml", "--address", ray_address, "--no-progress"]
        done = cli(contribshap, *args, cwd=tmp_path, env=game_env)
        assert done.returncode == 2, done.stderr
        assert re.fullmatch(rf"error: no space left on the device of {re.escape(str(disk / 'st'))}/\S+; free space "
                            r"there and run the same command again \(what the store already holds is kept\)\n",
                            done.stderr), done.stderr
        landed = len(list((disk / "st" / "evals").rglob("*-r0.parquet")))
        assert not [p for p in (disk / "st").rglob(".*.tmp-*")]  # no partial file left by a failed write
        subprocess.run(["mount", "-o", "remount,size=16m", str(disk)], check=True)
        again = cli(contribshap, *args, cwd=tmp_path, env=game_env)
        assert again.returncode == 0, again.stderr
        assert f"{120 - landed} evaluated, 0 failed, {landed} already done" in again.stderr
