"""Config loading: the issue's example loads as written, all problems at once, hashes cover the right keys."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from contribshap.pipeline.config.schema import (
    config_hash,
    load_config,
    parse_config,
    plan_hash,
    save_resolved,
)
from contribshap.pipeline.contracts.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
BASE = {
    "game": {"kind": "python", "target": "games_pipeline:airport", "n_players": 6},
    "design": {"kind": "leverage", "budget": 20, "seed": 0},
}


def _with(**changes):
    raw = yaml.safe_load(yaml.safe_dump(BASE))
    for dotted, value in changes.items():
        node = raw
        *parents, last = dotted.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return raw


def test_issue_example_loads_as_written(tmp_path, monkeypatch):
    shutil.copy(ROOT / "configs/examples/my_games.py", tmp_path / "my_games.py")
    shutil.copy(ROOT / "configs/examples/airport6.yaml", tmp_path / "airport6.yaml")
    monkeypatch.chdir(tmp_path)
    cfg = load_config("airport6.yaml")
    assert (cfg.name, cfg.game.n_players, cfg.design.kind, cfg.plan_seed()) == ("airport-6", 6, "exact", 0)
    assert cfg.estimators == ["exact_shapley", "kernelshap"]
    # the resolved config round-trips exactly
    save_resolved(cfg, tmp_path / "resolved.yaml")
    assert load_config(tmp_path / "resolved.yaml") == cfg


def test_config_accepts_exactly_the_registered_names():
    from contribshap.pipeline.core.designs import DESIGNS
    from contribshap.pipeline.core.estimators import method_names

    for design in DESIGNS:
        budget = None if design in ("exact", "loo") else 20
        assert parse_config(_with(design={"kind": design, "budget": budget})).design.kind == design
    for method in method_names():
        design = {"kind": "exact"} if method == "exact_shapley" else BASE["design"]
        assert parse_config(_with(estimators=[method], design=design)).estimators == [method]
    for raw, names in ((_with(design={"kind": "owen", "budget": 20}), DESIGNS), (_with(estimators=["owen"]), method_names())):
        with pytest.raises(ConfigError) as info:
            parse_config(raw)
        assert f"'owen'; valid {'designs' if names is DESIGNS else 'methods'}: {', '.join(names)}" in str(info.value)


def test_config_hash_covers_game_seed_replicates_only():
    base = config_hash(parse_config(BASE))
    same = [
        _with(name="other", store="elsewhere", estimators=["loo"], level=0.9),
        _with(ray={"num_cpus": 2, "num_gpus": 0.25, "address": "auto"}, stopping={"ci_abs": 0.1, "max_rounds": 3}),
        _with(design={"kind": "paired", "budget": 50, "seed": 3}, evaluation={"n_subsets": 10}),
    ]
    for raw in same:
        assert config_hash(parse_config(raw)) == base
    different = [_with(seed=1), _with(game__n_players=7), _with(replicates={"coalition": 2}),
                 _with(game__options={"scale": 2})]
    assert len({config_hash(parse_config(raw)) for raw in different} | {base}) == 5


def test_plan_hash_ignores_budget_but_not_design():
    base = plan_hash(parse_config(BASE))
    assert plan_hash(parse_config(_with(design__budget=200))) == base
    assert plan_hash(parse_config(_with(design__seed=1))) != base
    assert plan_hash(parse_config(_with(design__kind="paired"))) != base
    # design.seed defaults to the top-level seed
    assert plan_hash(parse_config(_with(design={"kind": "leverage", "budget": 20}))) == base
    assert plan_hash(parse_config(_with(design={"kind": "leverage", "budget": 20}, seed=1))) != base


def test_every_problem_is_reported_at_once():
    raw = _with(design={"kind": "leverage", "budget": 5}, estimators=["kernelshap", "exact_shapley"],
                stopping={"max_rounds": 3})
    with pytest.raises(ConfigError) as info:
        parse_config(raw, source="x.yaml")
    assert str(info.value) == (
        "x.yaml: design.budget: 5 is below n+2 = 8 (n = 6 players plus the empty and full coalitions); "
        "use budget >= 8 | stopping.max_rounds: > 1 needs a CI target; set stopping.ci_abs or stopping.ci_rel"
        " | estimators: exact_shapley needs design.kind: exact (got 'leverage'); remove it or use the exact design"
    )


def test_schema_problems_are_listed_with_key_paths():
    raw = _with(typo=1, level=1.5, ray={"num_gpus": 1.5, "bogus": 2}, design={"kind": "levrage", "budget": 20})
    with pytest.raises(ConfigError) as info:
        parse_config(raw, source="x.yaml")
    message = str(info.value)
    assert "\n" not in message
    for part in [
        "design.kind: unknown design 'levrage'; valid designs: exact, shapley_kernel, paired, leverage, uniform, "
        "datamodel, loo",
        "level: Input should be less than 1 (got 1.5)",
        "ray.num_gpus: got 1.5; use a fraction in (0, 1] or a whole number of GPUs",
        "ray.bogus: unknown key; remove it or check its spelling",
        "typo: unknown key; remove it or check its spelling",
    ]:
        assert part in message


def test_design_options_are_checked_against_the_design():
    with pytest.raises(ConfigError, match=r"design.options: unknown option\(s\) \['alpah'\] for design 'datamodel'"):
        parse_config(_with(design={"kind": "datamodel", "budget": 20, "options": {"alpah": 0.3}}))


def test_diffusion_missing_paths_are_reported(tmp_path):
    demo = yaml.safe_load((ROOT / "configs/demo.yaml").read_text())
    demo["game"]["model"]["pretrained"] = str(tmp_path / "nope")
    with pytest.raises(ConfigError) as info:
        parse_config(demo, source="d.yaml")
    assert str(info.value) == f"d.yaml: game.model.pretrained: path {tmp_path / 'nope'} does not exist; fix the path or create the file"


@pytest.mark.parametrize(("value", "problem"), [
    (1, "got 1; a game needs at least 2 contributors, use n_players >= 2"),
    (0, "got 0; a game needs at least 2 contributors, use n_players >= 2"),
    (True, "got True; use a whole number of contributors >= 2"),
    (2.5, "got 2.5; use a whole number of contributors >= 2"),
    ("6", "got '6'; use a whole number of contributors >= 2"),
])
def test_n_players_is_a_whole_number_of_at_least_two(value, problem):
    with pytest.raises(ConfigError) as info:
        parse_config(_with(game__n_players=value, design={"kind": "exact"}), source="x.yaml", check_paths=False)
    assert str(info.value) == f"x.yaml: game.n_players: {problem}"
    assert parse_config(_with(game__n_players=2, design={"kind": "exact"}), check_paths=False).n_players() == 2


def test_keys_given_twice_and_binary_files_are_refused(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("seed: 0\ngame:\n  kind: python\n  kind: python\ndesign: {kind: exact, kind: loo}\nseed: 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == (f"{path}: kind: key given twice (lines 3 and 4); keep one | kind: key given twice "
                               f"(lines 5 and 5); keep one | seed: key given twice (lines 1 and 6); keep one")
    path.write_bytes(b"seed: 0\n\xc3\x28")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: not a text file (byte 8 is not UTF-8); pass a YAML config saved as UTF-8"


def test_the_store_location_is_checked_on_request(tmp_path):
    from contribshap.pipeline.config.schema import store_location_problem

    (tmp_path / "file").write_text("x")
    assert store_location_problem(tmp_path / "new" / "deeper") is None
    assert store_location_problem(tmp_path / "file") == f"{tmp_path / 'file'} is a file, not a folder; set store to a folder path"
    assert store_location_problem(tmp_path / "file" / "a" / "b") == (
        f"{tmp_path / 'file' / 'a' / 'b'} cannot be created: {tmp_path / 'file'} is a file, not a folder; set store to "
        "a path outside it")
    raw = _with(store=str(tmp_path / "file" / "st"), design={"kind": "exact"})
    assert parse_config(raw, check_paths=False).store == str(tmp_path / "file" / "st")  # only when asked
    with pytest.raises(ConfigError, match=r"^x.yaml: store: .* cannot be created: "):
        parse_config(raw, source="x.yaml", check_paths=False, check_store=True)


def test_a_folder_or_an_empty_file_is_not_a_config(tmp_path):
    (tmp_path / "empty.yaml").write_text("# nothing yet\n")
    for path, problem in ((tmp_path, f"config file {tmp_path} is a folder; pass the path of a YAML config"),
                          (tmp_path / "empty.yaml", f"{tmp_path / 'empty.yaml'}: the file is empty; write the "
                                                    "config's keys (at least game and design)")):
        with pytest.raises(ConfigError) as info:
            load_config(path)
        assert str(info.value) == problem
