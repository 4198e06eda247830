"""Pixel encoder options: shapes, gradients, the shift-augmentation switch, and clear errors."""

from __future__ import annotations

import pytest
import torch

from agent.models.encoders import BasicBlock, PixelEncoder, resnet_trunk, scale_frames
from agent.models.world_model import WorldModel

PIX = (3, 64, 64)
OPTIONS = [("flatten", 8), ("pooled", 8), ("resnet", 1), ("resnet", 2)]


@pytest.mark.parametrize("arch, blocks", OPTIONS)
@pytest.mark.parametrize("shape", [PIX, (9, 64, 64), (3, 84, 84)])
def test_shapes_and_gradients_reach_every_weight(arch, blocks, shape):
    torch.manual_seed(0)
    enc = PixelEncoder(shape, 8, 16, shift_pad=3, arch=arch, resnet_blocks=blocks)
    obs = torch.randint(0, 256, (4, *shape), dtype=torch.uint8)
    z = enc(obs)
    assert z.shape == (4, 16) and torch.isfinite(z).all()
    z.pow(2).sum().backward()
    for name, p in enc.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_resnet_matches_the_reference_layout():
    trunk = resnet_trunk(3, blocks=8)
    blocks = [m for m in trunk if isinstance(m, BasicBlock)]
    assert len(blocks) == 32
    assert [b.conv1.out_channels for b in blocks[::8]] == [32, 64, 128, 256]
    assert [b.conv1.stride[0] for b in blocks[::8]] == [1, 2, 2, 2]
    assert not any(isinstance(m, (torch.nn.BatchNorm2d, torch.nn.LayerNorm, torch.nn.GroupNorm)) for m in trunk.modules())
    assert trunk(torch.zeros(2, 3, 64, 64)).shape == (2, 256)


@pytest.mark.parametrize("arch", ["flatten", "pooled", "resnet"])
def test_shift_pad_zero_switches_augmentation_off(arch):
    enc = PixelEncoder(PIX, 8, 16, shift_pad=0, arch=arch, resnet_blocks=1).train()
    obs = torch.randint(0, 256, (3, *PIX), dtype=torch.uint8)
    torch.testing.assert_close(enc(obs), enc(obs))
    enc_aug = PixelEncoder(PIX, 8, 16, shift_pad=3, arch=arch, resnet_blocks=1).train()
    assert not torch.allclose(enc_aug(obs), enc_aug(obs))


def test_encoder_that_does_not_fit_names_the_option_and_what_fits():
    with pytest.raises(ValueError, match=r"model.pixel_encoder=flatten needs frames of at least 29x29.*fit: \['pooled', 'resnet'\]"):
        PixelEncoder((3, 16, 16), 8, 16, arch="flatten")
    with pytest.raises(ValueError, match="unknown model.pixel_encoder 'vit'"):
        PixelEncoder(PIX, 8, 16, arch="vit")
    with pytest.raises(ValueError, match="model.resnet_blocks must be >= 1"):
        PixelEncoder(PIX, 8, 16, arch="resnet", resnet_blocks=0)
    with pytest.raises(ValueError, match="model.dyn_layers must be >= 1"):
        WorldModel(PIX, 1, latent_dim=16, dyn_layers=0)


def test_world_model_dynamics_depth():
    wm = WorldModel(PIX, 1, latent_dim=16, mlp_dim=32, num_channels=8, pixel_encoder="pooled", dyn_layers=1)
    assert sum(isinstance(m, torch.nn.Linear) for m in wm.dynamics) == 2  # one hidden layer + output
    assert wm.next(torch.zeros(3, 16), torch.zeros(3, 1)).shape == (3, 16)


def test_checkpoints_from_before_the_encoder_options_still_match():
    """A signature without the new model keys reads as the flatten encoder it was made with."""
    from agent.run.checkpoint import diff_signature

    old = {"model": {"latent_dim": 16}, "aux": {"_target_": "agent.auxiliary.RandomNetAux"}}
    now = {"model": {"latent_dim": 16, "pixel_encoder": "flatten", "resnet_blocks": 8, "dyn_layers": 2},
           "aux": {"_target_": "agent.auxiliary.RandomNetAux", "net": "conv"}}  # fmt: skip
    assert diff_signature(old, now) == []
    now["model"]["pixel_encoder"] = "pooled"
    assert diff_signature(old, now) == ["model.pixel_encoder: checkpoint has 'flatten', config has 'pooled'"]
    # the flatten encoder keeps its parameter names, so its old weights load
    names = [n for n, _ in PixelEncoder(PIX, 8, 16, arch="flatten").named_parameters()]
    assert names == ["convs.0.weight", "convs.0.bias", "convs.2.weight", "convs.2.bias", "convs.4.weight",
                     "convs.4.bias", "convs.6.weight", "convs.6.bias", "head.weight", "head.bias"]  # fmt: skip


def test_scale_frames_is_the_out_of_place_form_bit_for_bit_and_leaves_its_input():
    frames = torch.arange(256, dtype=torch.uint8).repeat(2, 3, 1, 1)  # every byte value
    assert torch.equal(scale_frames(frames), frames.float() / 255.0 - 0.5) and scale_frames(frames).dtype == torch.float32
    floats = torch.rand(2, 3, 4, 4) * 255
    before = floats.clone()
    assert torch.equal(scale_frames(floats), floats / 255.0 - 0.5) and torch.equal(floats, before)  # a float input is copied, not written
