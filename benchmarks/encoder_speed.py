"""Pixel encoder forward + backward time per option, fp32 against bf16 autocast and channels-last.

Baseline in the same run: each encoder in fp32 with the default memory layout.

    python benchmarks/encoder_speed.py [--batch 512] [--iters 3] [--encoders pooled:32 pooled:16 flatten:32 resnet:32]
"""

from __future__ import annotations

import argparse
import time

import torch

from agent.models.encoders import PixelEncoder

MODES = ("fp32", "bf16", "channels_last", "bf16+channels_last")


def step_time(enc: PixelEncoder, x: torch.Tensor, mode: str, iters: int) -> float:
    """Seconds per forward + backward of ``enc`` on ``x`` in ``mode``."""
    last = "channels_last" in mode
    enc = enc.to(memory_format=torch.channels_last if last else torch.contiguous_format)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled="bf16" in mode):
            z = enc(x)
        z.float().pow(2).mean().backward()

    step()
    t = time.perf_counter()
    for _ in range(iters):
        step()
    return (time.perf_counter() - t) / iters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--encoders", nargs="+", default=["pooled:32", "pooled:16", "flatten:32"],
                        help="arch:channels (resnet uses 1 block per stage here)")  # fmt: skip
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch} frames 3x64x64")
    torch.manual_seed(0)
    x = torch.randint(0, 256, (args.batch, 3, 64, 64), dtype=torch.uint8)
    for spec in args.encoders:
        arch, channels = spec.split(":")
        enc = PixelEncoder((3, 64, 64), int(channels), 256, shift_pad=0, arch=arch, resnet_blocks=1)
        times = {mode: step_time(enc, x, mode, args.iters) for mode in MODES}
        cells = "  ".join(f"{m} {t * 1e3:.0f} ms ({times['fp32'] / t:.2f}x)" for m, t in times.items())
        print(f"{spec:>10}: {cells}")


if __name__ == "__main__":
    main()
