"""Models and pruning: save/load round trips are exact, pruning keeps the UNet runnable and smaller."""

from __future__ import annotations

import pytest
import torch
from contribshap.pipeline.config.diffusion import DiffusionGameConfig
from contribshap.workers.checkpoints import load_model, save_model
from contribshap.workers.models import build_model, count_parameters, model_kind
from contribshap.workers.pruning import prune_model, save_pruned

CONFIG = DiffusionGameConfig.model_validate({"kind": "diffusion", "model": {"block_out_channels": [8, 16]}})


def _outputs(model: torch.nn.Module) -> torch.Tensor:
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model(x, torch.tensor([5, 500, 999])).sample


def test_build_is_seeded_and_round_trip_is_exact(tmp_path):
    model = build_model(CONFIG.model, seed=3)
    assert torch.equal(_outputs(model), _outputs(build_model(CONFIG.model, seed=3)))
    save_model(CONFIG.model, model, tmp_path / "m")
    assert (tmp_path / "m" / "diffusion_pytorch_model.safetensors").is_file()
    assert not list((tmp_path / "m").glob("*.bin")) and not list((tmp_path / "m").glob("*.pt"))
    loaded = load_model(CONFIG.model, tmp_path / "m")
    # from_pretrained returns eval mode; compare in the same mode (train vs eval kernels differ at 1e-7)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True))
    assert torch.equal(_outputs(model.eval()), _outputs(loaded.eval()))


def test_pruning_keeps_unet_runnable_smaller_and_round_trips(tmp_path):
    model = build_model(CONFIG.model, seed=0)
    before = count_parameters(model)
    conv_out = model.conv_out.weight.shape
    prune_model(model, CONFIG.prune)
    assert count_parameters(model) < 0.7 * before
    assert model.conv_out.out_channels == 1 and model.conv_out.weight.shape[0] == conv_out[0]
    assert _outputs(model).shape == (3, 1, 8, 8)
    # GroupNorm channel counts stay divisible by their groups
    for module in model.modules():
        if isinstance(module, torch.nn.GroupNorm):
            assert module.num_channels % module.num_groups == 0
    save_pruned(model, tmp_path / "p", model_config=CONFIG.model, prune=CONFIG.prune, base_folder=None)
    loaded = load_model(CONFIG.model, tmp_path / "p")
    assert count_parameters(loaded) == count_parameters(model)
    assert torch.equal(_outputs(model.eval()), _outputs(loaded.eval()))


def test_missing_weights_file_is_a_clear_error(tmp_path):
    save_model(CONFIG.model, build_model(CONFIG.model, seed=0), tmp_path / "m")
    (tmp_path / "m" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"diffusion_pytorch_model\.safetensors"):
        load_model(CONFIG.model, tmp_path / "m")


def test_unknown_model_kind_lists_valid_kinds():
    with pytest.raises(ValueError, match=r"model.kind .vae-gan. is not registered; valid: .*unet"):
        model_kind("vae-gan")


def test_from_pretrained_refuses_pickle_only_folders(tmp_path):
    from contribshap.workers.models import from_pretrained_safetensors
    from diffusers import UNet2DModel

    model = UNet2DModel(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), norm_num_groups=4,
                        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"))
    model.save_pretrained(tmp_path / "safe")
    loaded = from_pretrained_safetensors(UNet2DModel, tmp_path / "safe", key="model.pretrained")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True))
    model.save_pretrained(tmp_path / "pickled", safe_serialization=False)
    with pytest.raises(ValueError, match=r"model.pretrained: .*pickled has only pickle weights \['diffusion_pytorch_model.bin'\]"):
        from_pretrained_safetensors(UNet2DModel, tmp_path / "pickled", key="model.pretrained")
    with pytest.raises(FileNotFoundError, match=r"model.pretrained: .*missing does not exist"):
        from_pretrained_safetensors(UNet2DModel, tmp_path / "missing", key="model.pretrained")
