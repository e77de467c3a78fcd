"""The paper's three settings (CIFAR-20, CelebA-HQ, ArtBench) on tiny instances of the same architectures.

Unit tests check the readers, the LoRA-rank pruning and the properties against hand computations. The
end-to-end tests build each setting from its YAML in ``configs/`` with the paths and sizes overridden to
tiny random models and synthetic images in the real on-disk formats (``tests/usecase_fixtures.py``):

- in this process, through the production factory ``contribshap.pipeline.games.factory.build_game``: prepare,
  every coalition of 3 contributors, the exact Shapley reduction (efficiency holds), artifact reuse and
  determinism;
- through the real CLI (``contribshap run`` with Ray workers in other processes, then ``contribshap reduce
  --json``): a fresh worker knows every source and model kind because the game factory registers them.

No test imports the use-case registrations itself: they must come from the production path.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import usecase_fixtures as fx
import yaml
from contribshap.pipeline.config.diffusion import DiffusionGameConfig
from contribshap.pipeline.config.schema import parse_config
from contribshap.pipeline.core.designs import sample_coalitions
from contribshap.pipeline.core.estimators import estimate
from contribshap.pipeline.games.factory import build_game
from contribshap.usecases.cifar20.schema import CIFAR20_CLASSES

load_yaml = fx.load_yaml


def run_all_coalitions(game, n: int) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, float], dict[str, float]]:
    """prepare, then v(∅), v(N) and every other coalition; returns (masks, values by property, v_empty, v_full)."""
    game.prepare()
    masks = sample_coalitions(n, 2**n - 2, "exact")
    empty = game.evaluate(np.zeros(n, bool), replicate=0, seed=1)
    full = game.evaluate(np.ones(n, bool), replicate=0, seed=2)
    rows = [game.evaluate(m, replicate=0, seed=10 + i) for i, m in enumerate(masks)]
    names = game.property_names()
    values = {p: np.array([r.values[p] for r in rows]) for p in names}
    for r in [empty, full, *rows]:
        assert set(r.values) == set(names)
        assert all(np.isfinite(v) for v in r.values.values()), r.values
        assert {"finetune_s", "sample_s", "eval_s"} <= set(r.timings)
    return masks, values, empty.values, full.values


def check_exact_shapley(masks, values, v_empty, v_full) -> None:
    for prop, vals in values.items():
        est = estimate(masks, vals, v_empty[prop], v_full[prop], method="exact_shapley")
        assert np.all(np.isfinite(est.value))
        assert est.value.sum() == pytest.approx(v_full[prop] - v_empty[prop], rel=1e-6, abs=1e-9)


# --------------------------------------------------------------------------------------------------------
# configs: every path is a key; all missing paths reported at once
# --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["cifar20.yaml", "celebahq.yaml", "artbench.yaml"])
def test_shipped_configs_validate_and_list_every_missing_path(name):
    raw = load_yaml(name)
    cfg = parse_config(raw, source=name, check_paths=False)
    assert cfg.game.kind == "diffusion"
    missing = cfg.game.missing_paths()
    # the shipped placeholders do not exist here: every path key is reported, in one list
    keys = {line.split(":")[0] for line in missing}
    expected = {"cifar20.yaml": {"data.root", "data.root/train", "feature_extractor.weights"},
                "celebahq.yaml": {"data.root", "data.labels_csv", "model.vqvae", "feature_extractor.weights"},
                "artbench.yaml": {"data.root", "model.pipeline", "model.pipeline/unet", "feature_extractor.clip",
                                  "feature_extractor.head"}}[name]
    assert expected <= keys, missing
    with pytest.raises(Exception, match=re.escape(sorted(expected)[0])):
        parse_config(raw, source=name, check_paths=True)


def test_paper_hyperparameters_in_configs():
    cifar = load_yaml("cifar20.yaml")["game"]
    assert cifar["data"]["source"] == "cifar100" and "classes" not in cifar["data"]  # default = the paper's 20 classes
    assert list(DiffusionGameConfig.model_validate(cifar).data.classes) == list(CIFAR20_CLASSES)
    assert len(CIFAR20_CLASSES) == 20
    assert cifar["model"]["block_out_channels"] == [128, 256, 256, 256]
    assert (cifar["train"]["steps"], cifar["recover"]["steps"], cifar["finetune"]["steps"]) == (20000, 10000, 1000)
    assert (cifar["train"]["lr"], cifar["train"]["batch_size"], cifar["prune"]["ratio"]) == (1e-4, 128, 0.3)
    celeb = load_yaml("celebahq.yaml")["game"]
    assert celeb["data"]["n_identities"] == 50 and celeb["finetune"]["steps"] == 500
    assert celeb["feature_extractor"]["n_clusters"] == 20 and celeb["properties"] == ["diversity"]
    art = load_yaml("artbench.yaml")["game"]
    assert art["finetune"]["steps"] == 200 and art["null_model"] == "base"
    assert art["properties"] == ["aesthetic_mean", "aesthetic_p90"]


# --------------------------------------------------------------------------------------------------------
# readers
# --------------------------------------------------------------------------------------------------------
def test_cifar_reader_selects_classes_in_order_with_names(tmp_path):
    from contribshap.usecases.cifar20.source import read_cifar100

    root = fx.write_fake_cifar100(tmp_path / "cifar-100-python", classes=[40, 41, 80], n_per_class=5)
    images, owner, names = read_cifar100(root, [80, 40], max_per_class=3)
    assert images.shape == (6, 3, 32, 32) and images.dtype == np.uint8
    assert owner.tolist() == [0, 0, 0, 1, 1, 1]
    assert names == ["fine80", "fine40"]
    with pytest.raises(ValueError, match="class 7 has no images"):
        read_cifar100(root, [7])


def test_celebahq_index_takes_the_largest_identities(tmp_path):
    from contribshap.usecases.celebahq.schema import CelebAHQSource
    from contribshap.usecases.celebahq.source import read_celebahq_index

    root = fx.write_fake_celebahq(tmp_path / "celeba", n_identities=3, n_per_identity=4, n_small=2)
    files, owner, ids = read_celebahq_index(CelebAHQSource(root=root, n_identities=3, max_per_identity=2))
    assert ids == ["1000", "1001", "1002"]  # the 1-image identities 1003, 1004 are left out
    assert np.bincount(owner).tolist() == [2, 2, 2] and all(f.is_file() for f in files)
    with pytest.raises(ValueError, match="only 5 identities"):
        read_celebahq_index(CelebAHQSource(root=root, n_identities=9))


def test_artbench_artist_from_filename_and_metadata(tmp_path):
    from contribshap.usecases.artbench.schema import ArtBenchSource
    from contribshap.usecases.artbench.source import artist_from_filename, read_artbench_index

    assert artist_from_filename(Path("vincent-van-gogh_the-starry-night-1889.jpg")) == "vincent-van-gogh"
    root = fx.write_fake_artbench(tmp_path / "art", artists=["paul-cezanne", "vincent-van-gogh"], n_per_artist=3, metadata=True)
    by_name = read_artbench_index(ArtBenchSource(root=root))
    by_csv = read_artbench_index(ArtBenchSource(root=root, metadata_csv=root / "ArtBench-10.csv", max_per_artist=2))
    assert by_name[2] == by_csv[2] == ["paul-cezanne", "vincent-van-gogh"]  # the baroque painting is not included
    assert np.bincount(by_name[1]).tolist() == [3, 3] and np.bincount(by_csv[1]).tolist() == [2, 2]


def test_corrupt_image_names_the_file(tmp_path):
    from contribshap.workers.data import read_images

    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        read_images([bad], 8)


# --------------------------------------------------------------------------------------------------------
# LoRA-rank pruning
# --------------------------------------------------------------------------------------------------------
def test_select_ranks_keeps_the_globally_largest_components():
    from contribshap.usecases.artbench.backend import select_ranks

    mags = {"a": np.array([5.0, 0.1, 3.0, 0.2]), "b": np.array([0.05, 0.01, 0.02, 0.03])}
    keep = select_ranks(mags, 0.5)  # 4 of 8: b keeps its best (index 0), then 5.0, 3.0, 0.2 from a
    assert keep["a"].tolist() == [0, 2, 3] and keep["b"].tolist() == [0]
    assert {k: v.tolist() for k, v in select_ranks(mags, 1.0).items()} == {"a": [0, 1, 2, 3], "b": [0, 1, 2, 3]}
    with pytest.raises(ValueError, match="kept fraction"):
        select_ranks(mags, 0.0)


def test_lora_rank_pruning_is_an_exact_truncation(tmp_path):
    import torch
    from contribshap.usecases.artbench import backend as ab
    from diffusers import UNet2DConditionModel

    sd = fx.write_tiny_sd(tmp_path / "sd")
    unet = UNet2DConditionModel.from_pretrained(str(sd / "unet"))
    unet.requires_grad_(False)
    unet.add_adapter(ab.lora_config(4, 4.0, ["to_q", "to_k", "to_v", "to_out.0"]))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer in ab.lora_layers(unet, "default").values():
            layer.lora_B["default"].weight.copy_(torch.randn(layer.lora_B["default"].weight.shape, generator=g))
    layers = ab.lora_layers(unet, "default")
    full_delta = {n: (m.lora_B["default"].weight @ m.lora_A["default"].weight) * m.scaling["default"] for n, m in layers.items()}

    spec = ab.prune_lora(unet, source="default", target="pruned", kept_fraction=0.5, rank=4, alpha=4.0,
                         target_modules=["to_q", "to_k", "to_v", "to_out.0"])
    assert spec["kept"] == spec["total"] // 2
    keep = ab.select_ranks(ab.rank_magnitudes(unet, "default"), 0.5)
    for name, layer in ab.lora_layers(unet, "pruned").items():
        idx = torch.as_tensor(keep[name])
        a, b = layers[name].lora_A["default"].weight[idx], layers[name].lora_B["default"].weight[:, idx]
        expected = (b @ a) * layers[name].scaling["default"]  # the kept components, same scale
        got = layer.lora_B["pruned"].weight @ layer.lora_A["pruned"].weight * layer.scaling["pruned"]
        assert torch.allclose(got, expected, atol=1e-6)
        assert torch.linalg.norm(got - full_delta[name]) <= torch.linalg.norm(full_delta[name]) + 1e-6

    # keeping everything reproduces the full adapter's outputs
    ab.prune_lora(unet, source="default", target="all", kept_fraction=1.0, rank=4, alpha=4.0,
                  target_modules=["to_q", "to_k", "to_v", "to_out.0"])
    x, t, ctx = torch.randn(2, 4, 8, 8, generator=g), torch.tensor([10, 500]), torch.randn(2, 12, 16, generator=g)
    unet.set_adapter("default")
    y_full = unet(x, t, encoder_hidden_states=ctx).sample
    unet.set_adapter("all")
    assert torch.allclose(unet(x, t, encoder_hidden_states=ctx).sample, y_full, atol=1e-5)


# --------------------------------------------------------------------------------------------------------
# properties
# --------------------------------------------------------------------------------------------------------
def test_cluster_diversity_is_the_entropy_of_centroid_assignments():
    from contribshap.workers.properties.base import GeneratedFeatures, Reference, compute_properties
    from contribshap.workers.properties.embeddings import nearest_centroid, one_hot, ward_centroids

    rng = np.random.default_rng(0)
    centres = np.eye(4) * 10
    ref = np.concatenate([c + rng.normal(0, 0.1, (5, 4)) for c in centres])
    centroids = ward_centroids(ref, 4)
    ref_stats = Reference(mu=ref.mean(0), sigma=np.cov(ref, rowvar=False), features=ref, n_classes=4)

    def diversity(x):
        return compute_properties(["diversity"], GeneratedFeatures(x, one_hot(nearest_centroid(x, centroids), 4)), ref_stats)["diversity"]

    assert diversity(np.repeat(centres, 3, axis=0)) == pytest.approx(np.log(4))  # uniform over 4 clusters
    assert diversity(np.repeat(centres[:1], 6, axis=0)) == pytest.approx(0.0)  # all in one cluster
    assert diversity(np.concatenate([np.repeat(centres[:1], 2, 0), centres[1:2]])) == pytest.approx(
        -(2 / 3 * np.log(2 / 3) + 1 / 3 * np.log(1 / 3)))


@pytest.mark.parametrize("kind", ["clip", "blip"])
def test_image_embedder_loads_local_clip_and_blip_folders(tmp_path, kind):
    """Both embedding kinds of CelebA-HQ's diversity load from a local folder and give unit rows that
    depend on the image (deterministic for the same input)."""
    import torch
    from contribshap.workers.properties.embeddings import ImageEmbedder

    write = fx.write_tiny_clip_vision if kind == "clip" else fx.write_tiny_blip
    folder = write(tmp_path / kind, projection_dim=12, image_size=32)
    embed = ImageEmbedder(kind, folder, batch_size=3)
    images = torch.rand(5, 3, 48, 48, generator=torch.Generator().manual_seed(0)) * 2 - 1
    out = embed(images)
    assert out.shape == (5, 12) and out.dtype == np.float64
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(out, embed(images))
    assert np.abs(out[0] - out[1]).max() > 1e-4
    with pytest.raises(ValueError, match="allowed: clip, blip"):
        ImageEmbedder("dino", folder)


def test_aesthetic_head_scores_by_hand(tmp_path):
    import torch
    from contribshap.usecases.artbench.properties import load_linear_head
    from contribshap.workers.properties.base import GeneratedFeatures, compute_properties

    head = fx.write_linear_head(tmp_path / "head.pth", dim=3)
    w, b = load_linear_head(head)
    assert w.shape == (3,) and b == 5.0
    scores = np.arange(10.0)
    values = compute_properties(["aesthetic_mean", "aesthetic_p90"], GeneratedFeatures(scores[:, None], None), None)
    assert values == {"aesthetic_mean": 4.5, "aesthetic_p90": pytest.approx(8.1)}
    torch.save({"l1.weight": torch.zeros(4, 3), "l2.weight": torch.zeros(1, 4)}, str(tmp_path / "mlp.pth"))
    with pytest.raises(ValueError, match="not one linear layer"):
        load_linear_head(tmp_path / "mlp.pth")


# --------------------------------------------------------------------------------------------------------
# end to end in this process: each setting from its config through build_game, every coalition, exact Shapley
# --------------------------------------------------------------------------------------------------------
def build_setting(name: str, tmp_path: Path):
    cfg = parse_config(fx.setting_config(name, tmp_path), source=f"{name}-tiny")
    return cfg, build_game(cfg, tmp_path / "store")


@pytest.mark.slow
def test_cifar20_end_to_end(tmp_path):
    _, game = build_setting("cifar20", tmp_path)
    assert type(game).__name__ == "DiffusionGame"
    assert [c.id for c in game.contributors()] == fx.SETTING_IDS["cifar20"]
    masks, values, v_empty, v_full = run_all_coalitions(game, 3)
    assert set(values) == {"inception_score", "fid"}
    check_exact_shapley(masks, values, v_empty, v_full)


@pytest.mark.slow
def test_celebahq_end_to_end(tmp_path):
    cfg, game = build_setting("celebahq", tmp_path)
    artifacts = tmp_path / "store" / "artifacts"
    assert type(game).__name__ == "DiffusionGame"
    assert [c.id for c in game.contributors()] == fx.SETTING_IDS["celebahq"]
    masks, values, v_empty, v_full = run_all_coalitions(game, 3)
    assert all(0.0 <= v <= np.log(4) + 1e-9 for v in values["diversity"])
    check_exact_shapley(masks, values, v_empty, v_full)

    # latents were encoded once and cached; a second prepare reuses every artifact
    assert len(list(artifacts.glob("latents-*/latents.safetensors"))) == 1
    summary = build_game(cfg, tmp_path / "store").prepare()
    assert all(summary[k]["reused"] for k in ("latents", "theta_star", "pruned", "recovered", "extractor", "reference", "stages"))
    assert summary["pruned"]["parameters"] < summary["pruned"]["parameters_before"]
    # common random numbers + fixed seeds: the same coalition gives the same values
    again = game.evaluate(masks[0], replicate=0, seed=10)
    assert again.values == {p: values[p][0] for p in values}


@pytest.mark.slow
def test_artbench_end_to_end(tmp_path):
    cfg, game = build_setting("artbench", tmp_path)
    assert type(game).__name__ == "DiffusionGame"
    assert [c.name for c in game.contributors()] == ["Claude Monet", "Paul Cezanne", "Vincent Van Gogh"]
    masks, values, v_empty, v_full = run_all_coalitions(game, 3)
    check_exact_shapley(masks, values, v_empty, v_full)
    summary = game.prepare()
    kept = 1 - cfg.game.prune.ratio
    assert summary["pruned"]["kept_components"] == pytest.approx(kept * summary["pruned"]["total_components"], abs=1.0)
    assert summary["pruned"]["lora_parameters"] < summary["pruned"]["lora_parameters_before"]
    # the null model is the base pipeline without LoRA: it does not change when LoRA weights do
    assert game.evaluate(np.zeros(3, bool), replicate=0, seed=99).values == v_empty
    # the stage values of prepare: the null model measured there is the same v(∅)
    assert summary["stages"]["values"]["null"] == pytest.approx(v_empty)


# --------------------------------------------------------------------------------------------------------
# end to end through the real CLI: Ray workers in fresh processes, the store, the reducer
# --------------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", ["cifar20", "celebahq", "artbench"])
def test_setting_through_the_real_cli(tmp_path, name, contribshap, game_env, ray_address):
    raw = fx.setting_config(name, tmp_path)
    config_path = tmp_path / f"{name}.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    store = tmp_path / "store"

    # 1. contribshap run: prepare (a Ray task), plan, 8 evaluations on Ray workers, reduce.
    done = subprocess.run([*contribshap, "run", str(config_path), "--store", str(store), "--address", ray_address,
                           "--no-progress"], cwd=tmp_path, env=game_env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "8 evaluated, 0 failed" in done.stderr, done.stderr[-2000:]
    manifest = json.loads((store / "manifest.json").read_text())
    assert [c["id"] for c in manifest["contributors"]] == fx.SETTING_IDS[name]

    # 2. contribshap reduce --json: one exact Shapley vector per property, finite, efficient.
    reduced = subprocess.run([*contribshap, "reduce", str(store), "--json"], cwd=tmp_path, env=game_env,
                             capture_output=True, text=True, timeout=300)
    assert reduced.returncode == 0, reduced.stderr[-3000:]
    document = json.loads(reduced.stdout)
    assert sorted(document) == sorted(fx.SETTING_PROPERTIES[name])
    for prop, methods in document.items():
        entry = methods["exact_shapley"]
        assert [c["id"] for c in entry["contributors"]] == fx.SETTING_IDS[name]
        values = [c["value"] for c in entry["contributors"]]
        assert all(math.isfinite(v) for v in [*values, entry["v_empty"], entry["v_full"]]), (prop, entry)
        assert sum(values) == pytest.approx(entry["v_full"] - entry["v_empty"], rel=1e-6, abs=1e-9)
        assert entry["n_evaluations"] == 8
