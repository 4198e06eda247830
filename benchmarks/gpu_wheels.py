"""Wheels for a GPU session: the packages this project needs that the lent GPU machine's image lacks.

The GPU machine (Python 3.12, its own CUDA torch) reaches no package index, so the session carries them as
wheels in ``.whl/`` (git-ignored), at the versions ``requirements.txt`` pins. dm_control's wheel (56 MB) is
pruned of what state tasks never load (the locomotion and soccer assets, the dog's meshes, test files),
so everything fits the 64 MiB a device call may carry. Run here, with network:

    python benchmarks/gpu_wheels.py            # then: the run in benchmarks/gpu_session.sh's docstring

``--no-dmc`` leaves out dm_control and MuJoCo (the counting and gymnasium tasks need neither).
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from base64 import urlsafe_b64encode
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASE = ["tensordict", "torchrl", "hydra-core", "omegaconf", "orjson", "pyvers", "gymnasium", "Farama-Notifications"]
DMC = ["dm_control", "mujoco", "dm-env", "dm-tree", "glfw", "PyOpenGL"]
SDIST_ONLY = ["antlr4-python3-runtime"]  # omegaconf's parser: pure Python, built into a wheel here
PRUNE = ("dm_control/locomotion/", "dm_control/suite/dog_assets/", "dm_control/mujoco/testing/", "dm_control/blender/", "dm_control/mjcf/test_assets/")
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64"]
CARRY_LIMIT = 64 * 2**20


def pins() -> dict[str, str]:
    """``requirements.txt``'s pins by normalised package name."""
    out = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if "==" in line:
            name, version = line.split("==", 1)
            out[name.strip().lower().replace("_", "-")] = version.strip()
    return out


def pinned(name: str, versions: dict[str, str]) -> str:
    """``name==<requirements.txt's version>``; stops with a message when it is not pinned there."""
    key = name.lower().replace("_", "-")
    if key not in versions:
        raise SystemExit(f"{name} is not pinned in requirements.txt")
    return f"{name}=={versions[key]}"


def prune(wheel: Path) -> None:
    """Rewrite ``wheel`` without the files under :data:`PRUNE` (its RECORD rewritten to match)."""
    pruned = wheel.with_suffix(".tmp")
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(pruned, "w", zipfile.ZIP_DEFLATED) as dst:
        record_name = next(n for n in src.namelist() if n.endswith(".dist-info/RECORD"))
        rows = []
        for info in src.infolist():
            if info.filename.startswith(PRUNE) or info.filename == record_name:
                continue
            data = src.read(info)
            dst.writestr(info, data)
            digest = urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            rows.append(f"{info.filename},sha256={digest},{len(data)}")
        dst.writestr(record_name, "\n".join([*rows, f"{record_name},,"]) + "\n")
    pruned.replace(wheel)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / ".whl")
    parser.add_argument("--no-dmc", action="store_true", help="leave out dm_control and MuJoCo")
    parser.add_argument("--python-version", default="3.12", help="the GPU machine's Python")
    args = parser.parse_args()
    versions, out = pins(), args.out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    names = BASE + ([] if args.no_dmc else DMC)
    platforms = [f"--platform={p}" for p in PLATFORMS]
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", f"--python-version={args.python_version}",
           "--implementation=cp", *platforms, "-d", str(out), *(pinned(n, versions) for n in names)]  # fmt: skip
    subprocess.run(cmd, check=True)
    with tempfile.TemporaryDirectory() as tmp:  # sdists: built here (pure Python), copied as wheels
        cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", tmp, *(pinned(n, versions) for n in SDIST_ONLY)]
        subprocess.run(cmd, check=True)
        for wheel in Path(tmp).glob("*.whl"):
            shutil.copy(wheel, out)
    for wheel in out.glob("dm_control-*.whl"):
        prune(wheel)
    total = sum(p.stat().st_size for p in out.iterdir())
    for p in sorted(out.iterdir()):
        print(f"{p.stat().st_size / 2**20:7.2f} MiB  {p.name}")
    print(f"{total / 2**20:7.2f} MiB in {out} (a device call carries at most 64 MiB with the repo)")
    if total > CARRY_LIMIT - 8 * 2**20:
        raise SystemExit("too large to carry beside the repo: try --no-dmc")


if __name__ == "__main__":
    main()
