"""Fast paths of the representation update are switches whose losses match the fp32 eager path."""

from __future__ import annotations

import copy

import pytest
import torch

from agent.agents.factory import build_agent
from tests.conftest import compose_cfg


def _batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    obs = torch.zeros(2, 8, 3, 64, 64, dtype=torch.uint8)
    for i in range(8):  # a few bright squares on black, like counting frames
        for _ in range(i % 5):
            y, x = torch.randint(0, 56, (2,), generator=g).tolist()
            obs[:, i, :, y : y + 7, x : x + 7] = torch.randint(30, 226, (3, 1, 1), generator=g, dtype=torch.uint8)
    return {"obs": obs, "action": torch.rand(1, 8, 1, generator=g) * 2 - 1, "obs_reward": torch.rand(2, 8, 1, generator=g)}


FP32 = ("model=small", "model.pixel_encoder=pooled", "model.shift_pad=0", "perf.precision=fp32", "perf.channels_last=false")


def _agents(*overrides: str):
    """The fp32 eager agent and one with ``overrides``, with the same weights."""
    torch.manual_seed(0)
    base = build_agent(compose_cfg(*FP32), (3, 64, 64), 1)
    torch.manual_seed(0)
    fast = build_agent(compose_cfg(*FP32, *overrides), (3, 64, 64), 1)
    fast.load_state_dict(base.state_dict())
    return base, fast


@pytest.mark.parametrize(
    "overrides, rtol",
    [
        (("perf.channels_last=true",), 1e-4), (("perf.precision=bf16",), 0.05), (("perf.precision=bf16", "perf.channels_last=true"), 0.05),
        pytest.param(("perf.compile=true",), 1e-4, marks=pytest.mark.slow),  # compiles forward and backward (~40 s)
        pytest.param(("perf.compile=true", "perf.precision=bf16", "perf.channels_last=true"), 0.05, marks=pytest.mark.slow),
    ],
)  # fmt: skip
def test_fast_paths_match_fp32_losses_and_updates(overrides, rtol):
    base, fast = _agents(*overrides)
    batch = _batch()
    with fast.autocast():
        got, _ = fast.loss_fn(batch)  # the loss function the update runs (compiled when asked)
    want, _ = base.losses(batch)
    for k in want:
        torch.testing.assert_close(got[k].float(), want[k], rtol=rtol, atol=1e-6)
    # one update each: the parameters move the same way (cosine of the steps close to 1)
    before = copy.deepcopy(base.state_dict())
    base.update(batch)
    fast.update(batch)
    for name, p0 in before.items():
        if p0.is_floating_point() and p0.numel() > 100:
            d_base, d_fast = (base.state_dict()[name] - p0).flatten(), (fast.state_dict()[name] - p0).flatten()
            if d_base.norm() > 0:
                assert torch.nn.functional.cosine_similarity(d_base, d_fast, dim=0) > 0.9, name


def test_channels_last_weights_and_fp32_state():
    _, fast = _agents("perf.channels_last=true", "perf.precision=bf16")
    conv = fast.wm.encoder[0].convs[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and conv.dtype == torch.float32
    fast.update(_batch())
    assert all(s["exp_avg"].dtype == torch.float32 for s in fast.optim.state.values())


def test_unknown_precision_fails_clearly():
    with pytest.raises(ValueError, match="unknown precision 'fp16'"):
        build_agent(compose_cfg("perf.precision=fp16"), (3, 64, 64), 1)


def test_torch_renderer_and_explicit_data_device_run_as_the_default(tiny_cfg, tmp_path):
    """``task.renderer=torch`` (the GPU path of the counting env, here on the CPU) and ``data.device=cpu``
    are drop-ins: the run's numbers equal the default run's."""
    from agent.run.representation import Trainer

    base = Trainer(tiny_cfg("analysis.every=0", "steps=6"), tmp_path / "a").run()
    switched = Trainer(tiny_cfg("analysis.every=0", "steps=6", "task.renderer=torch", "data.device=cpu"), tmp_path / "b")
    assert switched.env.renderer == "torch"
    assert switched.run() == base
    assert (tmp_path / "a" / "metrics.csv").read_text().split("\n")[1].split(",")[:-1] == (
        (tmp_path / "b" / "metrics.csv").read_text().split("\n")[1].split(",")[:-1]
    )  # the first logged row, less updates/s
