#!/usr/bin/env bash
# GPU smoke test of the paper's three settings (CIFAR-20, CelebA-HQ, ArtBench) with tiny data, through the product.
#
# For each setting it writes synthetic data in the real on-disk format, writes configs/<setting>.yaml with the
# paths and step counts overridden (3 contributors, design exact: 8 evaluations), runs it with the real CLI
# (`contribshap run CONFIG --store ...`: a local Ray, prepare as a Ray task, every coalition on Ray workers),
# reduces it (`contribshap reduce --json`), and reports from the store: seconds per coalition (fine-tune /
# sample+decode / properties), the per-unit rates needed to extrapolate to the paper's budgets (seconds per
# fine-tune step, per image x DDIM step) and the workers' peak GPU memory.
#
# Profiles (random-init weights either way; nothing is downloaded):
#   paper  the paper's architectures: CIFAR UNet 128/256/256/256 (35.7M), the LDM CelebA-HQ latent UNet
#          224/448/672/896 + a VQModel of the CompVis layout at 256 px, SD-1.5-sized UNet/VAE/CLIP-L text
#          encoder with a rank-64 LoRA at 256 px, CLIP ViT-L/14-sized aesthetic tower. Default on CUDA.
#   tiny   the test-suite sizes (seconds on a CPU). Default on CPU.
#
# Usage:  bench/gpu_smoke.sh [--device auto|cpu|cuda] [--profile auto|tiny|paper]
#                            [--settings cifar20,celebahq,artbench] [--keep DIR]
#                            [--out bench/results/gpu_smoke.json] [--dry-run]
# --dry-run writes the fixtures and configs and runs `contribshap check` on each (no Ray, no training).
# Target: < 8 minutes on one GPU with the paper profile. Output: a table on stdout and the JSON file.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
exec "$PYTHON" - "$@" <<'PY'
import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path.cwd()
sys.path.insert(0, str(ROOT / "tests"))
import usecase_fixtures as fx  # noqa: E402

parser = argparse.ArgumentParser(description="GPU smoke test of the three use cases through contribshap run")
parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
parser.add_argument("--profile", default="auto", choices=["auto", "tiny", "paper"])
parser.add_argument("--settings", default="cifar20,celebahq,artbench")
parser.add_argument("--keep", default=None, help="write fixtures and stores here and keep them (default: a temporary folder)")
parser.add_argument("--out", default="bench/results/gpu_smoke.json")
parser.add_argument("--dry-run", action="store_true", help="write fixtures and configs, run `contribshap check`; no training")
args = parser.parse_args()
device = "cuda" if args.device == "auto" and torch.cuda.is_available() else ("cpu" if args.device == "auto" else args.device)
profile = args.profile if args.profile != "auto" else ("paper" if device == "cuda" else "tiny")
settings = [s for s in args.settings.split(",") if s]
unknown = sorted(set(settings) - {"cifar20", "celebahq", "artbench"})
if unknown:
    sys.exit(f"--settings {unknown} are unknown; valid: cifar20, celebahq, artbench")
script = Path(sys.executable).with_name("contribshap")
CLI = [str(script)] if script.exists() else [sys.executable, "-m", "contribshap.pipeline.products.cli"]


def cli(*command: str, timeout: float = 3600) -> subprocess.CompletedProcess:
    """Run the real CLI; a failure ends the script with its last lines of stderr."""
    done = subprocess.run([*CLI, *command], capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    if done.returncode != 0:
        sys.exit(f"contribshap {' '.join(command)} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return done


def read_evals(store: Path) -> list[dict]:
    """One dict per evaluation file of the store (``evals/<namespace>/<key>-r<replicate>.parquet``)."""
    import pyarrow.parquet as pq

    return [pq.read_table(path).to_pylist()[0] for path in sorted((store / "evals").rglob("*-r*.parquet"))]


def run_settings(tmp: Path) -> dict:
    run = {"device": device, "precision": "bf16" if device == "cuda" else "fp32"}
    paper = profile == "paper"

    # --- per-setting fixtures + config overrides -----------------------------------------------------
    def cifar20():
        classes = [40, 55, 80]
        root = fx.write_fake_cifar100(tmp / "cifar-100-python", classes=classes, n_per_class=64 if paper else 6)
        inception = fx.write_fake_inception(tmp / "inception-2015-12-05.pt")
        game = {**run, "data": {"root": str(root), "classes": classes}, "feature_extractor": {"weights": str(inception), "batch_size": 250}}
        if paper:  # the paper's UNet as in the YAML; short stages
            game.update(train={"steps": 20}, recover={"steps": 10},
                        finetune={"steps": 50, "batch_size": 128}, sampling={"steps": 20, "n_images": 500, "batch_size": 500})
        else:
            game.update(train={"steps": 6, "batch_size": 8}, recover={"steps": 3, "batch_size": 8},
                        finetune={"steps": 2, "batch_size": 4}, sampling={"steps": 2, "n_images": 8, "batch_size": 8},
                        model={"block_out_channels": [16, 32], "layers_per_block": 1, "norm_num_groups": 4,
                               "down_block_types": ["DownBlock2D", "AttnDownBlock2D"], "up_block_types": ["AttnUpBlock2D", "UpBlock2D"]})
        return game

    def celebahq():
        size = 256 if paper else 16
        root = fx.write_fake_celebahq(tmp / "celeba", n_identities=3, n_per_identity=16 if paper else 4, size=size, n_small=0)
        vq_dir = tmp / "ldm" / "vqvae"
        if paper:  # the CompVis ldm-celebahq-256 VQModel layout (256 px -> 3x64x64), random weights
            from diffusers import VQModel

            VQModel(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                    block_out_channels=(128, 256, 512), layers_per_block=2, latent_channels=3, num_vq_embeddings=8192,
                    sample_size=256).save_pretrained(vq_dir)
            clip = tmp / "clip"
            from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

            CLIPVisionModelWithProjection(CLIPVisionConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                                           num_attention_heads=12, image_size=224, patch_size=16,
                                                           projection_dim=512)).save_pretrained(clip)
        else:
            fx.write_tiny_vqmodel(vq_dir)
            clip = fx.write_tiny_clip_vision(tmp / "clip")
        game = {**run, "data": {"root": str(root), "labels_csv": str(root / "labels.csv"), "n_identities": 3, "image_size": size},
                "model": {"vqvae": str(vq_dir), "encode_batch_size": 16},
                "feature_extractor": {"kind": "clip", "weights": str(clip), "n_clusters": 4, "reference_size": 64}}
        if paper:  # the paper's latent UNet as in the YAML
            game.update(train={"steps": 10}, recover={"steps": 5}, finetune={"steps": 50, "batch_size": 32},
                        sampling={"steps": 20, "n_images": 128, "batch_size": 128})
        else:
            game["model"].update(sample_size=8, block_out_channels=[16, 32], layers_per_block=1, norm_num_groups=4,
                                 down_block_types=["DownBlock2D", "AttnDownBlock2D"], up_block_types=["AttnUpBlock2D", "UpBlock2D"])
            game.update(train={"steps": 6, "batch_size": 8}, recover={"steps": 3, "batch_size": 8},
                        finetune={"steps": 2, "batch_size": 4}, sampling={"steps": 2, "n_images": 8, "batch_size": 8})
        return game

    def artbench():
        size = 256 if paper else 16
        root = fx.write_fake_artbench(tmp / "art", artists=["claude-monet", "paul-cezanne", "vincent-van-gogh"],
                                      n_per_artist=16 if paper else 3, size=size)
        sd, clip = tmp / "sd15", tmp / "clip-l"
        head = fx.write_linear_head(tmp / "head.pth", dim=768 if paper else 12)
        if paper:  # SD-1.5-sized components (UNet 860M, VAE 84M, CLIP-L text encoder) and CLIP ViT-L/14, random
            from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
            from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, CLIPVisionConfig, CLIPVisionModelWithProjection

            tok = fx.write_tiny_tokenizer(sd / "tokenizer")
            CLIPTokenizer.from_pretrained(str(tok), model_max_length=77).save_pretrained(tok)
            vocab = len(json.loads((tok / "vocab.json").read_text()))
            CLIPTextModel(CLIPTextConfig(vocab_size=vocab, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                         num_attention_heads=12, max_position_embeddings=77, bos_token_id=0, eos_token_id=1,
                                         pad_token_id=1)).save_pretrained(sd / "text_encoder")
            UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8).save_pretrained(sd / "unet")
            AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                          block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                          sample_size=512).save_pretrained(sd / "vae")
            PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", set_alpha_to_one=False,
                          skip_prk_steps=True, steps_offset=1).save_pretrained(sd / "scheduler")
            CLIPVisionModelWithProjection(CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                                           num_attention_heads=16, image_size=224, patch_size=14,
                                                           projection_dim=768)).save_pretrained(clip)
        else:
            fx.write_tiny_sd(sd)
            fx.write_tiny_clip_vision(clip, projection_dim=12)
        game = {**run, "data": {"root": str(root), "image_size": size},
                "model": {"pipeline": str(sd), "encode_batch_size": 16},
                "feature_extractor": {"clip": str(clip), "head": str(head), "batch_size": 64}}
        if paper:  # rank 64 LoRA as in the YAML
            game.update(train={"steps": 10}, recover={"steps": 5}, finetune={"steps": 50, "batch_size": 16},
                        sampling={"steps": 20, "n_images": 64, "batch_size": 64})
        else:
            game["model"]["rank"] = 4
            game.update(train={"steps": 6, "batch_size": 8}, recover={"steps": 3, "batch_size": 8},
                        finetune={"steps": 2, "batch_size": 4}, sampling={"steps": 2, "n_images": 8, "batch_size": 8})
        return game

    builders = {"cifar20": cifar20, "celebahq": celebahq, "artbench": artbench}
    results = {}
    for name in settings:
        # 1. fixtures + the shipped config with paths and sizes overridden, written as YAML
        start = time.perf_counter()
        folder = tmp / name
        folder.mkdir(parents=True, exist_ok=True)
        raw = fx.deep_update(fx.load_yaml(f"{name}.yaml"), {"game": builders[name]()})
        raw.update({"store": str(folder / "store"), "design": {"kind": "exact"}, "estimators": ["exact_shapley"],
                    "replicates": {"coalition": 1, "endpoints": 1},
                    "ray": {"num_cpus": 1, "num_gpus": 1 if device == "cuda" else 0}})
        config_path = folder / f"{name}.yaml"
        config_path.write_text(yaml.safe_dump(raw, sort_keys=False))
        fixtures_s = time.perf_counter() - start
        if args.dry_run:
            cli("check", str(config_path), timeout=600)
            results[name] = {"fixtures_s": round(fixtures_s, 2), "config": str(config_path), "dry_run": True}
            print(f"{name}: fixtures + config + contribshap check OK ({fixtures_s:.1f} s)", flush=True)
            continue

        # 2. contribshap run: prepare (a Ray task), 8 coalitions on Ray workers, reduce; then reduce --json
        start = time.perf_counter()
        cli("run", str(config_path), "--store", str(folder / "store"), "--no-progress")
        run_s = time.perf_counter() - start
        estimates = json.loads(cli("reduce", str(folder / "store"), "--json", timeout=600).stdout)

        # 3. timings and rates from the store's rows (the null model is not trained: left out of the means)
        rows = [r for r in read_evals(folder / "store") if r["status"] == "ok"]
        trained = [r for r in rows if r["size"] > 0]
        infos = [json.loads(r["info"] or "{}") for r in rows]
        prepare_s = sum(json.loads(p.read_text()).get("seconds", 0.0)
                        for p in (folder / "store" / "artifacts").glob("*/artifact.json"))
        g = raw["game"]
        steps, n_images, ddim = g["finetune"]["steps"], g["sampling"]["n_images"], g["sampling"]["steps"]
        mean = {k: float(np.mean([r[k] for r in trained])) for k in ("wall_s", "finetune_s", "sample_s", "eval_s")}
        peaks = [i["peak_gpu_gib"] for i in infos if "peak_gpu_gib" in i]
        results[name] = {
            "n_contributors": len(next(iter(estimates.values()))["exact_shapley"]["contributors"]),
            "model_kind": g["model"]["kind"],
            "n_evaluations": len(rows),
            "finetune_steps": steps,
            "finetune_batch": g["finetune"]["batch_size"],
            "n_images": n_images,
            "ddim_steps": ddim,
            "fixtures_s": round(fixtures_s, 2),
            "run_s": round(run_s, 1),
            "prepare_s": round(prepare_s, 2),
            "coalition_s": round(mean["wall_s"], 3),
            "finetune_s": round(mean["finetune_s"], 3),
            "sample_s": round(mean["sample_s"], 3),
            "eval_s": round(mean["eval_s"], 3),
            "s_per_finetune_step": mean["finetune_s"] / max(1, steps),
            "s_per_image_step": mean["sample_s"] / (n_images * ddim),
            "peak_gpu_gib": max(peaks) if peaks else None,
            "shapley": {prop: [c["value"] for c in doc["exact_shapley"]["contributors"]] for prop, doc in estimates.items()},
            "finite": all(math.isfinite(c["value"]) for doc in estimates.values() for c in doc["exact_shapley"]["contributors"]),
        }
    return results


total_start = time.perf_counter()
if args.keep:
    results = run_settings(Path(args.keep).resolve())
else:
    with tempfile.TemporaryDirectory(prefix="gpu_smoke-") as tmp:
        results = run_settings(Path(tmp))
doc = {
    "device": device,
    "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None,
    "profile": profile,
    "torch": torch.__version__,
    "host": platform.node(),
    "cpus": os.cpu_count(),
    "total_s": round(time.perf_counter() - total_start, 1),
    "settings": results,
}
print(f"\ngpu_smoke: device={device} ({doc['gpu'] or 'no GPU'}), profile={profile}, total {doc['total_s']} s")
if args.dry_run:
    sys.exit(0)
print(f"{'setting':10} {'prepare s':>9} {'coal. s':>8} {'ft s':>7} {'sample s':>8} {'eval s':>7} {'s/ft step':>10} {'s/img-step':>11} {'peak GiB':>8}")
for name, r in results.items():
    peak = "-" if r["peak_gpu_gib"] is None else f"{r['peak_gpu_gib']:.2f}"
    print(f"{name:10} {r['prepare_s']:9.1f} {r['coalition_s']:8.2f} {r['finetune_s']:7.2f} {r['sample_s']:8.2f} {r['eval_s']:7.2f} "
          f"{r['s_per_finetune_step']:10.4f} {r['s_per_image_step']:11.2e} {peak:>8}")
out = ROOT / args.out
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text(json.dumps(doc, indent=1, default=float))
print(f"wrote {out}")
PY
