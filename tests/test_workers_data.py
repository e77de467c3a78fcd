"""Config schema and contributor datasets: digits schemes, planted contributors, folders, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from contribshap.pipeline.config.diffusion import DiffusionGameConfig
from contribshap.workers.data import ContributorDataset, load_dataset
from pydantic import ValidationError


def _config(**game):
    return DiffusionGameConfig.model_validate({"kind": "diffusion", **game})


def test_defaults_fill_discriminators_and_validate():
    config = _config(data={"planted": [{"kind": "noise", "name": "noise"}]})
    assert config.data.source == "digits" and config.model.kind == "unet"
    assert config.n_contributors() == 11
    assert config.finetune.mode == "sparsified_ft" and config.sampling.scheduler == "ddim"


@pytest.mark.parametrize(
    ("game", "needle"),
    [
        ({"data": {"scheme": "by_person"}}, "random:K"),
        ({"properties": ["fid", "sharpness"]}, "sharpness"),
        ({"finetune": {"mode": "lora"}}, "sparsified_ft"),
        ({"model": {"block_out_channels": [16, 30]}}, "norm_num_groups"),
        ({"data": {"source": "pickle"}}, "digits"),
    ],
)
def test_bad_values_are_named(game, needle):
    with pytest.raises(ValidationError, match=needle):
        _config(**game)


def test_missing_paths_are_listed_all_at_once(tmp_path):
    config = _config(
        data={"source": "folder", "root": str(tmp_path / "nowhere"), "image_size": 8, "channels": 1},
        model={"sample_size": 8, "pretrained": str(tmp_path / "theta")},
        feature_extractor={"kind": "inception", "weights": str(tmp_path / "inception.pt")},
    )
    missing = config.missing_paths()
    assert [line.split(":")[0] for line in missing] == [
        "data.root", "data.contributors_csv", "model.pretrained", "feature_extractor.weights",
    ]


def test_digits_by_class_with_planted_contributors():
    config = _config(data={"planted": [{"kind": "noise", "name": "noise", "n_images": 50},
                                       {"kind": "duplicates", "name": "dups", "n_images": 20, "n_sources": 2}]})
    data = load_dataset(config.data)
    assert data.images.shape == (1797 + 70, 1, 8, 8)
    assert float(data.images.min()) >= -1.0 and float(data.images.max()) <= 1.0
    assert [c.id for c in data.contributors][-3:] == ["class-9", "planted-noise", "planted-dups"]
    assert sum(c.n_samples for c in data.contributors) == len(data)
    assert int(data.planted.sum()) == 70
    dups = data.images[data.contributor_index == 11]
    assert len(torch.unique(dups.round(decimals=0), dim=0)) <= 20  # near-copies of 2 sources
    mask = np.zeros(12, bool)
    mask[[3, 10]] = True
    chosen = data.coalition_indices(mask)
    assert len(chosen) == data.contributors[3].n_samples + 50


def test_digits_random_split_and_class_subset():
    data = load_dataset(_config(data={"scheme": "random:4", "classes": [0, 1, 2]}).data)
    sizes = [c.n_samples for c in data.contributors]
    assert len(sizes) == 4 and max(sizes) - min(sizes) <= 1
    assert set(data.labels.tolist()) == {0, 1, 2}


def _write_folder(root, *, corrupt=False, missing=False):
    from PIL import Image

    root.mkdir()
    rows = ["file,contributor,name"]
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (10, 10), dtype=np.uint8)).save(root / f"img{i}.png")
        rows.append(f"img{i}.png,{'b' if i % 2 else 'a'},Person {'B' if i % 2 else 'A'}")
    if corrupt:
        (root / "bad.png").write_bytes(b"not a png at all")
        rows.append("bad.png,a,Person A")
    if missing:
        rows.append("ghost.png,b,Person B")
    (root / "contributors.csv").write_text("\n".join(rows) + "\n")


def test_folder_source_reads_images_and_contributors(tmp_path):
    _write_folder(tmp_path / "imgs")
    config = _config(data={"source": "folder", "root": str(tmp_path / "imgs"), "image_size": 8, "channels": 1},
                     model={"sample_size": 8}, feature_extractor={"kind": "inception", "weights": __file__})
    data = load_dataset(config.data)
    assert data.images.shape == (6, 1, 8, 8)
    assert [(c.id, c.name, c.n_samples) for c in data.contributors] == [("a", "Person A", 3), ("b", "Person B", 3)]
    assert config.n_contributors() == 2 and config.missing_paths() == []


@pytest.mark.parametrize(("kind", "needle"), [("corrupt", "bad.png"), ("missing", "ghost.png")])
def test_folder_bad_images_name_the_file(tmp_path, kind, needle):
    _write_folder(tmp_path / kind, corrupt=kind == "corrupt", missing=kind == "missing")
    config = _config(data={"source": "folder", "root": str(tmp_path / kind), "image_size": 8, "channels": 1},
                     model={"sample_size": 8}, feature_extractor={"kind": "inception", "weights": __file__})
    with pytest.raises((ValueError, FileNotFoundError), match=needle):
        load_dataset(config.data)


def test_contributor_without_images_is_an_error():
    from contribshap.pipeline.contracts.game import Contributor

    with pytest.raises(ValueError, match="own no images"):
        ContributorDataset(images=torch.zeros(2, 1, 8, 8), contributor_index=torch.tensor([0, 0]),
                           contributors=[Contributor("a", "a"), Contributor("b", "b")])


def test_source_registry_lists_valid_names():
    from contribshap.workers.data import _load_cached

    class Fake:
        source = "nowhere"

        @classmethod
        def model_validate_json(cls, text):
            return cls()

    from contribshap.workers.registry import SOURCES

    assert {"digits", "folder", "cifar100", "celebahq", "artbench"} <= set(SOURCES.names())
    with pytest.raises(ValueError, match=r"data.source 'nowhere' is not registered; valid: .*digits"):
        _load_cached.__wrapped__(Fake, "{}")


def test_holdout_split_is_disjoint_from_training_and_extractor_images():
    from contribshap.workers.data import holdout_split

    config = _config(data={"holdout_fraction": 0.3, "planted": [{"kind": "noise", "name": "noise", "n_images": 20}]},
                     reference="heldout")
    labels = np.repeat(np.arange(10), 50)
    train, extractor, reference = holdout_split(labels, 0.3, seed=0)
    assert len(np.intersect1d(train, reference)) == len(np.intersect1d(train, extractor)) == 0
    assert len(np.intersect1d(extractor, reference)) == 0
    assert np.array_equal(np.sort(np.concatenate([train, extractor, reference])), np.arange(500))
    assert np.bincount(labels[reference]).tolist() == [8] * 10 and np.bincount(labels[extractor]).tolist() == [7] * 10
    assert np.array_equal(holdout_split(labels, 0.3, seed=0)[2], reference)  # seeded: the same on every worker

    # the loaded dataset: no reference image is a training image or an extractor image (digits has no duplicates)
    data = load_dataset(config.data)
    rows = lambda t: {bytes(r) for r in t.reshape(len(t), -1).numpy()}  # noqa: E731
    training, held_ref, held_ext = rows(data.images), rows(data.reference_images), rows(data.extractor_images)
    assert len(held_ref) == len(data.reference_images) and not held_ref & training and not held_ref & held_ext
    assert not held_ext & training
    assert len(data) + len(data.reference_images) + len(data.extractor_images) == 1797 + 20
    assert config.n_contributors() == 11 and len(data.contributors) == 11


def test_new_data_keys_at_their_defaults_keep_the_dump_and_the_hash():
    from contribshap.workers.artifacts import config_hash

    plain = _config(data={"planted": [{"kind": "noise", "name": "noise"}]})
    assert "holdout_fraction" not in plain.data.model_dump() and "contributors" not in plain.data.model_dump()
    explicit = _config(data={"planted": [{"kind": "noise", "name": "noise"}], "holdout_fraction": 0.0})
    assert config_hash(plain.data) == config_hash(explicit.data)
    held = _config(data={"holdout_fraction": 0.2})
    assert DiffusionGameConfig.model_validate(held.model_dump(mode="json")) == held


@pytest.mark.parametrize(
    ("game", "needle"),
    [
        ({"reference": "heldout"}, "holdout_fraction"),
        ({"data": {"contributors": [{"name": "b", "kind": "copy", "of": "a"}]}}, "not an earlier contributor"),
        ({"data": {"contributors": [{"name": "a"}]}}, "needs n_images"),
        ({"data": {"contributors": [{"name": "a", "n_images": 5}], "scheme": "random:3"}}, "replaces data.scheme"),
    ],
)
def test_scenario_and_reference_errors_are_named(game, needle):
    with pytest.raises(ValidationError, match=needle):
        _config(**game)


def test_scenario_contributors_are_built_as_specified():
    specs = [
        {"name": "a", "n_images": 60, "classes": [0, 1, 2]},
        {"name": "twin", "kind": "copy", "of": "a"},
        {"name": "sub", "kind": "subset", "of": "a", "n_images": 20},
        {"name": "noisy", "n_images": 30, "classes": [0, 1, 2], "corruption": "pixel_noise", "level": 0.5},
        {"name": "dups", "kind": "duplicates", "n_images": 30, "n_sources": 3},
        {"name": "noise", "kind": "noise", "n_images": 10},
    ]
    config = _config(data={"holdout_fraction": 0.2, "contributors": specs}, reference="heldout")
    data = load_dataset(config.data)
    assert [c.id for c in data.contributors] == ["a", "twin", "sub", "noisy", "dups", "noise"]
    assert config.n_contributors() == 6
    own = lambda j: data.images[data.contributor_index == j]  # noqa: E731
    assert torch.equal(own(0), own(1)) and torch.equal(own(2), own(0)[:20])
    assert torch.bincount(data.labels[data.contributor_index == 0]).tolist() == [20, 20, 20]
    assert (data.labels[data.contributor_index == 3] == -1).all() and data.planted[data.contributor_index == 3].all()
    changed = (own(3) != load_dataset(_config(data={"holdout_fraction": 0.2, "contributors": [
        *specs[:3], {**specs[3], "level": 0.0}]}, reference="heldout").data).images[-30:]).float().mean()
    assert 0.3 < float(changed) < 0.6  # about half the pixels replaced
    assert len({bytes(r) for r in own(4).reshape(30, -1).numpy()}) == 30 and data.planted[data.contributor_index == 4].all()
    with pytest.raises(ValueError, match="no training images left"):
        load_dataset(_config(data={"contributors": [{"name": "x", "n_images": 400, "classes": [0]}]}).data)
