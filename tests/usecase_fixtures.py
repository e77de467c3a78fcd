"""Tiny stand-ins for the use cases' real files, written in the real on-disk formats (no downloads).

- :func:`write_fake_cifar100`: a ``cifar-100-python`` folder (``train`` + ``meta`` pickles).
- :func:`write_fake_inception`: a TorchScript module with the call signature of clean-fid's
  ``inception-2015-12-05.pt`` (``return_features=True`` -> features, ``no_output_bias=True`` -> (N, 1008)
  softmax); its features are 16-d instead of 2048-d so that FID's matrix square root stays cheap.
- :func:`write_fake_celebahq`: an image folder + ``labels.csv`` (file,identity).
- :func:`write_tiny_vqmodel`: a random ``VQModel`` saved with ``save_pretrained``.
- :func:`write_tiny_clip_vision` / :func:`write_linear_head`: a random CLIP vision tower with projection
  and a LAION-style linear head state dict.
- :func:`write_tiny_sd`: a Stable Diffusion 1.x folder (unet / vae / text_encoder / tokenizer / scheduler)
  with tiny random models and a CLIP tokenizer built from a small local vocabulary.
- :func:`write_fake_artbench`: an ArtBench-style ``<style>/<artist>_<title>.jpg`` folder (+ metadata CSV).
- :func:`setting_config`: a shipped setting's YAML (``configs/``) with its paths pointing at the files above
  and tiny sizes, every coalition of 3 contributors planned.

Images carry a per-contributor colour so that contributors differ; everything is seeded.
"""

from __future__ import annotations

import csv
import json
import pickle
from pathlib import Path

import numpy as np


def _contributor_images(rng: np.random.Generator, n: int, size: int, j: int) -> np.ndarray:
    """uint8 (n, size, size, 3): a contributor-specific colour + a gradient + noise."""
    colour = np.array([(37 * j) % 256, (91 * j + 60) % 256, (53 * j + 120) % 256], dtype=np.float64)
    ramp = np.linspace(-40, 40, size)[None, :, None, None]
    noise = rng.normal(0, 25, size=(n, size, size, 3))
    return np.clip(colour + ramp + noise, 0, 255).astype(np.uint8)


def write_fake_cifar100(root: Path, *, classes: list[int], n_per_class: int, extra_classes: tuple[int, ...] = (0, 99), seed: int = 0) -> Path:
    """A ``cifar-100-python`` folder whose ``train`` holds ``n_per_class`` 32x32 images of each class."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    data, labels = [], []
    for c in [*classes, *extra_classes]:
        imgs = _contributor_images(rng, n_per_class, 32, c)  # (n, 32, 32, 3)
        data.append(imgs.transpose(0, 3, 1, 2).reshape(n_per_class, 3072))
        labels += [c] * n_per_class
    order = rng.permutation(len(labels))
    batch = {"data": np.concatenate(data)[order], "fine_labels": [labels[i] for i in order],
             "coarse_labels": [0] * len(labels), "filenames": [f"img_{i}.png" for i in range(len(labels))], "batch_label": "training batch"}
    with (root / "train").open("wb") as handle:
        pickle.dump(batch, handle)
    with (root / "meta").open("wb") as handle:
        pickle.dump({"fine_label_names": [f"fine{k:02d}" for k in range(100)], "coarse_label_names": []}, handle)
    return root


def write_fake_inception(path: Path, *, feature_dim: int = 16, seed: int = 0) -> Path:
    """A TorchScript 'Inception' with clean-fid's call signature (input float RGB in [0, 255], any size)."""
    import torch

    class FakeInception(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            g = torch.Generator().manual_seed(seed)
            self.features = torch.nn.Parameter(torch.randn(48, feature_dim, generator=g) * 0.3)
            self.logits = torch.nn.Parameter(torch.randn(feature_dim, 1008, generator=g) * 0.5)

        def forward(self, img: torch.Tensor, return_features: bool = False, use_fp16: bool = False,
                    no_output_bias: bool = False) -> torch.Tensor:
            x = torch.nn.functional.adaptive_avg_pool2d(img / 255.0, 4).flatten(1)
            feats = torch.tanh(x @ self.features)
            if return_features:
                return feats
            return torch.softmax(feats @ self.logits, dim=1)

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.script(FakeInception()).save(str(path))
    return path


def write_image(path: Path, array: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def write_fake_celebahq(root: Path, *, n_identities: int, n_per_identity: int, size: int = 16, n_small: int = 2, seed: int = 0) -> Path:
    """``root/<id>_<k>.png`` + ``root/labels.csv``; ``n_small`` extra identities have a single image each."""
    rng = np.random.default_rng(seed)
    rows = []
    for j in range(n_identities + n_small):
        n = n_per_identity if j < n_identities else 1
        for k, img in enumerate(_contributor_images(rng, n, size, j)):
            name = f"img/{1000 + j}_{k}.png"
            write_image(root / name, img)
            rows.append((name, str(1000 + j)))
    with (root / "labels.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "identity"])
        writer.writerows(rows)
    return root


def write_tiny_vqmodel(folder: Path, *, seed: int = 0) -> Path:
    """A 2-level VQModel (16x16 images -> 3x8x8 latents, 64 codes), saved with save_pretrained."""
    import torch
    from diffusers import VQModel

    torch.manual_seed(seed)
    vq = VQModel(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
                 up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), block_out_channels=(8, 16), layers_per_block=1,
                 latent_channels=3, num_vq_embeddings=64, vq_embed_dim=3, norm_num_groups=4, sample_size=16)
    vq.save_pretrained(folder)
    return folder


def write_tiny_clip_vision(folder: Path, *, projection_dim: int = 12, image_size: int = 32, seed: int = 0) -> Path:
    """A random CLIPVisionModelWithProjection (1 layer), saved with save_pretrained."""
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    model = CLIPVisionModelWithProjection(CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                                           num_attention_heads=2, image_size=image_size, patch_size=8,
                                                           projection_dim=projection_dim))
    model.save_pretrained(folder)
    return folder


def write_tiny_blip(folder: Path, *, projection_dim: int = 12, image_size: int = 32, seed: int = 0) -> Path:
    """A random BlipModel (1-layer vision and text towers), saved with save_pretrained. BLIP's default
    vision initializer_range (1e-10) makes a random tower constant, so the fixture uses 0.02."""
    import torch
    from transformers import BlipConfig, BlipModel

    torch.manual_seed(seed)
    config = BlipConfig(
        vision_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": image_size, "patch_size": 8, "initializer_range": 0.02},
        text_config={"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                     "vocab_size": 64, "encoder_hidden_size": 16},
        projection_dim=projection_dim,
    )
    BlipModel(config).save_pretrained(folder)
    return folder


def write_linear_head(path: Path, *, dim: int = 12, seed: int = 0) -> Path:
    """A LAION-style linear aesthetic head (state dict: weight (1, dim), bias (1,)) saved with torch.save."""
    import torch

    g = torch.Generator().manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"weight": torch.randn(1, dim, generator=g), "bias": torch.tensor([5.0])}, str(path))
    return path


def write_tiny_tokenizer(folder: Path) -> Path:
    """A CLIPTokenizer from a character-level vocabulary (no merges), saved with save_pretrained."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for ch in "abcdefghijklmnopqrstuvwxyz-":
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=12)
    tokenizer.save_pretrained(folder)
    return folder


def write_tiny_sd(folder: Path, *, seed: int = 0) -> Path:
    """A tiny SD 1.x folder: UNet2DConditionModel (8x8x4 latents), AutoencoderKL (16x16 images), CLIP text."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    tokenizer_dir = write_tiny_tokenizer(folder / "tokenizer")
    vocab_size = len(json.loads((tokenizer_dir / "vocab.json").read_text()))
    CLIPTextModel(CLIPTextConfig(vocab_size=vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, max_position_embeddings=12, bos_token_id=0, eos_token_id=1,
                                 pad_token_id=1)).save_pretrained(folder / "text_encoder")
    UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                         up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), block_out_channels=(16, 32), layers_per_block=1,
                         cross_attention_dim=16, attention_head_dim=4, norm_num_groups=8).save_pretrained(folder / "unet")
    AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
                  up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), block_out_channels=(8, 16), latent_channels=4,
                  norm_num_groups=4, sample_size=16, layers_per_block=1).save_pretrained(folder / "vae")
    PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", set_alpha_to_one=False,
                  skip_prk_steps=True, steps_offset=1).save_pretrained(folder / "scheduler")  # as SD 1.x ships
    return folder


def write_fake_artbench(root: Path, *, artists: list[str], n_per_artist: int, style: str = "post_impressionism", size: int = 16,
                        other_style: str = "baroque", seed: int = 0, metadata: bool = False) -> Path:
    """``root/<style>/<artist>_<title-k>.jpg`` (+ one painting of another style), optionally ArtBench-10.csv."""
    rng = np.random.default_rng(seed)
    rows = []
    for j, artist in enumerate(artists):
        for k, img in enumerate(_contributor_images(rng, n_per_artist, size, j)):
            name = f"{artist}_painting-{k}.jpg"
            write_image(root / style / name, img)
            rows.append((name, artist, style))
    write_image(root / other_style / "someone-else_a-church.jpg", _contributor_images(rng, 1, size, 99)[0])
    rows.append(("someone-else_a-church.jpg", "someone-else", other_style))
    if metadata:
        with (root / "ArtBench-10.csv").open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["name", "artist", "label"])
            writer.writerows(rows)
    return root


# --------------------------------------------------------------------------------------------------------
# the three settings from their shipped YAML, paths and sizes overridden to the tiny files above
# --------------------------------------------------------------------------------------------------------
REPO_ROOT = Path(__file__).resolve().parents[1]

#: Training and sampling sizes of every tiny setting (seconds on a CPU).
TINY_RUN = {"train": {"steps": 6, "batch_size": 8}, "recover": {"steps": 3, "batch_size": 8},
            "finetune": {"steps": 2, "batch_size": 4}, "sampling": {"steps": 2, "n_images": 8, "batch_size": 8},
            "device": "cpu", "precision": "fp32"}

#: Contributor ids of each tiny setting, in mask order.
SETTING_IDS = {
    "cifar20": ["cifar100-40", "cifar100-55", "cifar100-80"],
    "celebahq": ["celebahq-1000", "celebahq-1001", "celebahq-1002"],
    "artbench": ["artist-claude-monet", "artist-paul-cezanne", "artist-vincent-van-gogh"],
}

#: Properties each setting measures (its shipped config's ``properties``).
SETTING_PROPERTIES = {"cifar20": ["inception_score", "fid"], "celebahq": ["diversity"],
                      "artbench": ["aesthetic_mean", "aesthetic_p90"]}


def load_yaml(name: str) -> dict:
    import yaml

    return yaml.safe_load((REPO_ROOT / "configs" / name).read_text())


def deep_update(base: dict, override: dict) -> dict:
    """``base`` with ``override`` merged in recursively (dicts merge, anything else replaces)."""
    import copy

    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = deep_update(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def setting_config(name: str, folder: Path) -> dict:
    """The raw config of setting ``name`` (cifar20 | celebahq | artbench) on tiny files written under ``folder``.

    Store: ``folder / "store"``. Every coalition of the 3 contributors is planned (design ``exact``).
    """
    if name == "cifar20":
        classes = [40, 55, 80]
        root = write_fake_cifar100(folder / "cifar-100-python", classes=classes, n_per_class=6)
        inception = write_fake_inception(folder / "weights" / "inception-2015-12-05.pt")
        game = {
            "data": {"root": str(root), "classes": classes},
            "model": {"block_out_channels": [16, 32], "layers_per_block": 1, "norm_num_groups": 4,
                      "down_block_types": ["DownBlock2D", "AttnDownBlock2D"], "up_block_types": ["AttnUpBlock2D", "UpBlock2D"]},
            "feature_extractor": {"weights": str(inception), "batch_size": 8},
        }
    elif name == "celebahq":
        root = write_fake_celebahq(folder / "celeba", n_identities=3, n_per_identity=4, size=16)
        vq = write_tiny_vqmodel(folder / "ldm" / "vqvae")
        clip = write_tiny_clip_vision(folder / "clip")
        game = {
            "data": {"root": str(root), "labels_csv": str(root / "labels.csv"), "n_identities": 3, "image_size": 16},
            "model": {"vqvae": str(vq), "sample_size": 8, "block_out_channels": [16, 32], "layers_per_block": 1,
                      "norm_num_groups": 4, "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
                      "up_block_types": ["AttnUpBlock2D", "UpBlock2D"], "encode_batch_size": 4},
            "feature_extractor": {"kind": "clip", "weights": str(clip), "n_clusters": 4, "reference_size": 12},
        }
    elif name == "artbench":
        root = write_fake_artbench(folder / "art", artists=["claude-monet", "paul-cezanne", "vincent-van-gogh"],
                                   n_per_artist=3, size=16)
        sd = write_tiny_sd(folder / "sd15")
        clip = write_tiny_clip_vision(folder / "clip-vit-l-14", projection_dim=12)
        head = write_linear_head(folder / "sa_0_4_vit_l_14_linear.pth", dim=12)
        game = {
            "data": {"root": str(root), "image_size": 16},
            "model": {"pipeline": str(sd), "rank": 4, "encode_batch_size": 4},
            "feature_extractor": {"clip": str(clip), "head": str(head), "batch_size": 8},
        }
    else:
        raise ValueError(f"setting {name!r} is unknown; valid: {sorted(SETTING_IDS)}")
    raw = deep_update(load_yaml(f"{name}.yaml"), {"store": str(folder / "store"), "game": {**TINY_RUN, **game}})
    raw.update({"design": {"kind": "exact"}, "replicates": {"coalition": 1, "endpoints": 1},
                "estimators": ["exact_shapley"], "ray": {"num_cpus": 1, "num_gpus": 0}})
    return raw
