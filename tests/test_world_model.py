"""Contracts of the world model, the encoders and the augmentation."""

from __future__ import annotations

import pytest
import torch

from agent.models.encoders import ShiftAug
from agent.models.world_model import WorldModel

PIX = (3, 64, 64)


def tiny(obs_shape=PIX, **kw) -> WorldModel:
    return WorldModel(obs_shape, 1, latent_dim=16, enc_dim=32, mlp_dim=32, num_channels=8, **kw)


def test_pixel_encode_and_next_shapes():
    wm = tiny()
    obs = torch.randint(0, 256, (2, 5, *PIX), dtype=torch.uint8)
    z = wm.encode(obs)
    assert z.shape == (2, 5, 16) and wm.kind == "pixels"
    assert wm.next(z, torch.zeros(2, 5, 1)).shape == (2, 5, 16)


def test_state_encoder_chosen_from_shape():
    wm = tiny((7,))
    assert wm.kind == "state"
    assert wm.encode(torch.randn(3, 4, 7)).shape == (3, 4, 16)


def test_simnorm_latent():
    wm = tiny(simnorm=True, simnorm_dim=8)
    z = wm.encode(torch.randint(0, 256, (3, *PIX), dtype=torch.uint8))
    torch.testing.assert_close(z.view(3, 2, 8).sum(-1), torch.ones(3, 2))


def test_bad_shapes_raise():
    wm = tiny()
    with pytest.raises(ValueError, match="expected observations"):
        wm.encode(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="action shape"):
        wm.next(torch.zeros(2, 16), torch.zeros(2, 3))


def test_incompatible_preset_names_the_problem():
    with pytest.raises(ValueError, match="'pixels' encoder but the task's observations are state"):
        tiny((7,), encoder="pixels")
    with pytest.raises(ValueError, match="unknown encoder"):
        tiny(encoder="vit")


def test_shift_aug_translates_by_whole_pixels_in_training_only():
    torch.manual_seed(0)
    aug = ShiftAug(3)
    x = torch.zeros(64, 1, 16, 16)
    x[:, :, 8, 8] = 1.0
    out = aug(x)
    # every output is the input moved by an integer shift: a single 1 pixel, within +-3 of (8, 8)
    flat = out.view(64, -1)
    assert torch.allclose(flat.max(-1).values, torch.ones(64), atol=1e-5)
    assert torch.allclose(flat.sum(-1), torch.ones(64), atol=1e-4)
    ys, xs = torch.div(flat.argmax(-1), 16, rounding_mode="floor"), flat.argmax(-1) % 16
    assert ((ys - 8).abs() <= 3).all() and ((xs - 8).abs() <= 3).all()
    assert len(set(zip(ys.tolist(), xs.tolist()))) > 10
    aug.eval()
    assert torch.equal(aug(x), x)
