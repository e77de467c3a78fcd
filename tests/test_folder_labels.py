"""Your own labelled images: a folder with a ``label`` column, its per-class held-out split, the built-in
``digits_cnn`` extractor on 16x16 images, ``check``'s data summary and a whole ``contribshap run``."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

CLASSES = (0, 1, 2)
PER_CLASS = 30


def write_labelled_folder(root: Path, *, label_column: bool = True, copy_of: str | None = None) -> Path:
    """sklearn digits of CLASSES (PER_CLASS each) upscaled to 16x16 PNGs, three contributors, labels as names."""
    from PIL import Image
    from sklearn.datasets import load_digits

    bunch = load_digits()
    root.mkdir(parents=True, exist_ok=True)
    rows = ["file,contributor,label" if label_column else "file,contributor"]
    names = {0: "zero", 1: "one", 2: "two"}
    k = 0
    for c in CLASSES:
        for i in np.flatnonzero(bunch.target == c)[:PER_CLASS]:
            pixels = (bunch.images[i] / 16.0 * 255.0).astype(np.uint8)
            Image.fromarray(pixels, mode="L").resize((16, 16), Image.Resampling.NEAREST).save(root / f"{k:04d}.png")
            who = ("p", "q", "r")[k % 3]
            rows.append(f"{k:04d}.png,{who}" + (f",{names[c]}" if label_column else ""))
            k += 1
    if copy_of is not None:  # a fourth contributor re-uploads every file of `copy_of`
        rows += [r.replace(f",{copy_of},", ",copier,", 1) for r in rows[1:] if f",{copy_of}," in r]
    (root / "contributors.csv").write_text("\n".join(rows) + "\n")
    return root


def folder_config(root: Path, **data) -> str:
    extra = "".join(f"    {k}: {json.dumps(v)}\n" for k, v in data.items())
    return f"""
name: labelled-folder
seed: 0
game:
  kind: diffusion
  data:
    source: folder
    root: {root}
    image_size: 16
    channels: 1
    labels: true
    holdout_fraction: 0.4
{extra}  model: {{kind: unet, sample_size: 16, in_channels: 1, block_out_channels: [8, 16], norm_num_groups: 4,
          attention_head_dim: null}}
  train: {{steps: 20, lr: 0.002, batch_size: 32}}
  prune: {{ratio: 0.3, importance: magnitude}}
  recover: {{steps: 5, lr: 0.001, batch_size: 32}}
  finetune: {{mode: sparsified_ft, steps: 3, lr: 0.0003, batch_size: 16}}
  sampling: {{scheduler: ddim, steps: 3, n_images: 32, batch_size: 32, noise_seed: 1234}}
  properties: [fid, kid, inception_score, quality]
  feature_extractor: {{kind: digits_cnn, feature_dim: 8, steps: 60, batch_size: 32}}
  reference: heldout
  device: cpu
design: {{kind: exact}}
estimators: [exact_shapley]
ray: {{num_cpus: 1, local_num_cpus: 2}}
"""


def _data(root: Path, **extra):
    from contribshap.pipeline.config.diffusion import FolderSource

    return FolderSource.model_validate({"source": "folder", "root": str(root), "image_size": 16, "channels": 1,
                                        "labels": True, **extra})


def test_labels_and_the_held_out_split_follow_the_digits_rule(tmp_path):
    from contribshap.workers.data import holdout_split, load_dataset

    root = write_labelled_folder(tmp_path / "imgs")
    plain = load_dataset(_data(root))
    assert plain.images.shape == (90, 1, 16, 16) and sorted(set(plain.labels.tolist())) == [0, 1, 2]
    assert plain.reference_images is None and plain.extractor_images is None
    held = load_dataset(_data(root, holdout_fraction=0.4, split_seed=3))
    train, extractor, reference = holdout_split(plain.labels.numpy(), 0.4, 3)
    assert len(held) == len(train) and len(held.reference_images) == len(reference) == 18  # 6 of 12 per class
    assert held.extractor_labels.tolist() == plain.labels[extractor].tolist()
    assert torch_equal(held.images, plain.images[train]) and torch_equal(held.reference_images, plain.images[reference])
    assert [c.id for c in held.contributors] == ["p", "q", "r"]


def torch_equal(a, b) -> bool:
    return bool((a == b).all())


def test_schema_rules_for_labels(tmp_path):
    from contribshap.pipeline.config.diffusion import DiffusionGameConfig

    root = str(tmp_path)
    base = {"kind": "diffusion", "model": {"sample_size": 16}, "feature_extractor": {"kind": "digits_cnn"}}
    with pytest.raises(ValidationError, match="digits_cnn needs class labels"):
        DiffusionGameConfig.model_validate({**base, "data": {"source": "folder", "root": root, "image_size": 16,
                                                             "channels": 1}, "model": {"sample_size": 16}})
    ok = DiffusionGameConfig.model_validate({**base, "data": {"source": "folder", "root": root, "image_size": 16,
                                                              "channels": 1, "labels": True}})
    assert ok.data.labels
    with pytest.raises(ValidationError, match=r"needs data\.labels: true"):
        _data(tmp_path, labels=False, holdout_fraction=0.3)
    with pytest.raises(ValidationError, match="keep one"):
        _data(tmp_path, holdout_fraction=0.3, reference_csv=str(tmp_path / "ref.csv"))


def test_a_missing_label_column_is_one_clear_error(tmp_path):
    from contribshap.workers.data import load_dataset

    root = write_labelled_folder(tmp_path / "imgs", label_column=False)
    with pytest.raises(ValueError, match=r"data\.labels is true but .* has no `label` column"):
        load_dataset(_data(root))


def test_digits_cnn_takes_any_square_size_and_channels():
    import torch
    from contribshap.workers.properties.extractors import DigitsCNN

    for channels, side, pooled in ((1, 8, 4), (3, 16, 8), (3, 64, 8), (1, 12, 6)):
        net = DigitsCNN(5, 8, channels, side)
        features, logits = net(torch.zeros(2, channels, side, side))
        assert features.shape == (2, 8) and logits.shape == (2, 5) and net.pooled == pooled


@pytest.mark.slow
def test_labelled_folder_through_check_and_run(tmp_path, ray_address, game_env, contribshap):
    root = write_labelled_folder(tmp_path / "imgs", copy_of="r")
    config = tmp_path / "folder.yaml"
    config.write_text(folder_config(root))

    # 1. check: the data summary, the copier found, no torch model trained.
    done = subprocess.run([*contribshap, "check", str(config)], cwd=tmp_path, env=game_env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "files: 120 listed, 0 unreadable, 60 in 30 group(s) of byte-identical files" in done.stdout
    assert "  same bytes: 0002.png (listed 2 times)" in done.stdout
    assert "data: 4 contributors, 72 training images, classes per contributor 3-3" in done.stdout
    pair = [line for line in done.stdout.splitlines() if line.startswith("  copier <-> r: ")]
    assert len(pair) == 1 and "overlap: 1 pair(s)" in done.stdout  # the copier (its copies split like any image)

    # 2. run: prepare (the CNN trains on the held-out extractor split of 16x16 images), 16 coalitions, reduce.
    store = tmp_path / "store"
    done = subprocess.run([*contribshap, "run", str(config), "--store", str(store), "--address", ray_address,
                           "--no-progress"], cwd=tmp_path, env=game_env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    estimates = json.loads((store / "estimates" / "estimates.json").read_text())
    assert set(estimates) == {"fid", "kid", "inception_score", "quality"}
    ids = [c["id"] for c in estimates["fid"]["exact_shapley"]["contributors"]]
    assert ids == ["copier", "p", "q", "r"]
    assert all(np.isfinite(c["value"]) for c in estimates["fid"]["exact_shapley"]["contributors"])
    extractor = json.loads(next((store / "artifacts").glob("extractor-*/extractor.json")).read_text())
    assert (extractor["side"], extractor["in_channels"], extractor["classes"]) == (16, 1, [0, 1, 2])
    assert extractor["trained_on"] == "extractor_split" and extractor["n_train"] + extractor["n_test"] == 24  # 8 of 40 per class

    # 3. status shows prepare's overlap artifact.
    done = subprocess.run([*contribshap, "status", str(store)], cwd=tmp_path, env=game_env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert pair[0] in done.stdout.splitlines()
