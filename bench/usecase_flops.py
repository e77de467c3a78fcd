"""Count the FLOPs of one forward pass of each use case's networks (torch's FlopCounterMode, on CPU).

These counts, not timings, feed the GPU-hour arithmetic in docs/usecases.md: they are exact for the
architectures (random weights; FLOPs do not depend on the values) and need no GPU. Counted per image:

- CIFAR-20: the paper's UNet2DModel 32x32 (128/256/256/256) before and after 30% magnitude pruning.
- CelebA-HQ: the LDM latent UNet 64x64x3 (224/448/672/896, single-head attention) before and after 30%
  pruning, and the VQModel decoder (3x64x64 -> 256x256) of the CompVis layout.
- ArtBench: the SD-1.5 UNet at 256x256 images (4x32x32 latents, 77-token context), the SD VAE decoder,
  and CLIP ViT-L/14 at 224 (the aesthetic predictor's tower).

Usage: ``.venv/bin/python bench/usecase_flops.py [--out bench/results/usecase_flops.json] [--only NAME ...]``
Prints a table and writes JSON. Takes a few minutes on 2 CPU cores (the LDM pruning pass dominates).
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode


def count(fn) -> float:
    """FLOPs of ``fn()`` (a forward pass at batch 1), counted by torch (2 FLOPs per multiply-add)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def prune(model: torch.nn.Module, ratio: float) -> torch.nn.Module:
    from contribshap.pipeline.config.schema.diffusion import PruneConfig
    from contribshap.workers.pruning import prune_model

    return prune_model(model, PruneConfig(ratio=ratio))


def cifar_unet():
    from contribshap.usecases.cifar20.source import PAPER_UNET
    from diffusers import UNet2DModel

    kw = {k: v for k, v in PAPER_UNET.items() if k != "kind"}
    kw["block_out_channels"] = tuple(kw["block_out_channels"])
    kw["down_block_types"], kw["up_block_types"] = tuple(kw["down_block_types"]), tuple(kw["up_block_types"])
    return UNet2DModel(**kw, out_channels=3)


def ldm_unet():
    from diffusers import UNet2DModel

    return UNet2DModel(sample_size=64, in_channels=3, out_channels=3, block_out_channels=(224, 448, 672, 896), layers_per_block=2,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"), attention_head_dim=None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="bench/results/usecase_flops.json")
    parser.add_argument("--only", nargs="*", default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    rows: dict[str, dict[str, float]] = {}

    def record(name: str, build, call) -> None:
        if args.only and name not in args.only:
            return
        start = time.perf_counter()
        model = build().eval()
        gflops = count(functools.partial(call, model)) / 1e9
        rows[name] = {"gflops": gflops, "params_m": params(model) / 1e6,
                      "seconds": round(time.perf_counter() - start, 1)}
        print(f"{name:28} {rows[name]['params_m']:9.1f} M {rows[name]['gflops']:10.2f} GFLOP", flush=True)

    t1 = torch.tensor([500])
    record("cifar_unet", cifar_unet, lambda m: m(torch.randn(1, 3, 32, 32), t1))
    record("cifar_unet_pruned_0.3", lambda: prune(cifar_unet(), 0.3), lambda m: m(torch.randn(1, 3, 32, 32), t1))
    record("ldm_unet", ldm_unet, lambda m: m(torch.randn(1, 3, 64, 64), t1))
    record("ldm_unet_pruned_0.3", lambda: prune(ldm_unet(), 0.3), lambda m: m(torch.randn(1, 3, 64, 64), t1))

    def vq():
        from diffusers import VQModel

        return VQModel(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 3,
                       up_block_types=("UpDecoderBlock2D",) * 3, block_out_channels=(128, 256, 512), layers_per_block=2,
                       latent_channels=3, num_vq_embeddings=8192, sample_size=256)

    record("vq_decode_256", vq, lambda m: m.decode(torch.randn(1, 3, 64, 64)))

    def sd_unet():
        from diffusers import UNet2DConditionModel

        return UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8)

    record("sd15_unet_256px", sd_unet, lambda m: m(torch.randn(1, 4, 32, 32), t1, encoder_hidden_states=torch.randn(1, 77, 768)))

    def sd_vae():
        from diffusers import AutoencoderKL

        return AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                             block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4)

    record("sd_vae_decode_256", sd_vae, lambda m: m.decode(torch.randn(1, 4, 32, 32)))

    def clip_l():
        from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

        return CLIPVisionModelWithProjection(CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                                              num_attention_heads=16, image_size=224, patch_size=14, projection_dim=768))

    record("clip_vit_l14_224", clip_l, lambda m: m(pixel_values=torch.randn(1, 3, 224, 224)))

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(out.read_text()) if out.is_file() else {}
    out.write_text(json.dumps({**previous, **rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
