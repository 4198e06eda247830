"""Gymnasium tasks through torchrl's ``GymEnv`` (``task=gym/<id>``, e.g. ``gym/Pendulum-v1``)."""

from __future__ import annotations

from torchrl.envs import EnvBase

from envs.control import batch, standardise

TASK_KEYS = ("suite", "name", "obs_type", "action_repeat", "episode_length", "success_on_termination")


def env_steps(task: dict) -> int:
    """Env steps per episode: ``task.episode_length``, else the task's own limit (else 1000)."""
    if task.get("episode_length"):
        return int(task["episode_length"])
    import gymnasium

    spec = gymnasium.spec(str(task["name"])) if str(task["name"]) in gymnasium.registry else None
    return int(spec.max_episode_steps or 1000) if spec else 1000


def build(task: dict, *, num_envs: int, seed: int | None, device: str) -> EnvBase:
    """``make_env`` entry for the gym suite (state observations)."""
    unknown = sorted(set(task) - set(TASK_KEYS))
    if unknown:
        raise ValueError(f"unknown gym task option(s) {unknown}; expected keys among {list(TASK_KEYS)}")
    if not isinstance(task.get("success_on_termination", False), bool):
        raise ValueError(f"task.success_on_termination must be true or false, got {task['success_on_termination']!r}")
    if task.get("obs_type", "state") != "state":
        raise ValueError("gym tasks here are state-only (obs_type=state)")
    try:
        import gymnasium
        from torchrl.envs import GymEnv
    except ImportError as err:
        raise ImportError(f"gym tasks need gymnasium: pip install -e '.[gym]' ({err})") from err
    name = str(task["name"])
    if name not in gymnasium.registry:
        raise ValueError(f"unknown gym task {name!r}; e.g. {sorted(k for k in gymnasium.registry if 'v' in k)[:12]}")
    repeat = int(task.get("action_repeat", 1))
    length = env_steps(task)

    def make_one(_: int) -> EnvBase:
        return standardise(GymEnv(name, frame_skip=repeat), obs_type="state", max_steps=length // repeat)

    return batch(make_one, num_envs, seed, device)
