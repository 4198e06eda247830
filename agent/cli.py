"""The ``key=value`` argument style of the project's module CLIs (``agent.analyze``, ``agent.evaluate``)."""

from __future__ import annotations


def parse(argv: list[str], keys: tuple[str, ...]) -> dict[str, str]:
    """``key=value`` arguments -> dict, rejecting unknown keys; ``run_dir`` or ``checkpoint`` required.

    Shared by the analysis and evaluation CLIs.
    """
    args = {}
    for item in argv:
        key, sep, value = item.partition("=")
        if not sep or key not in keys:
            raise SystemExit(f"bad argument {item!r}; expected key=value with key in {keys}")
        args[key] = value
    if "run_dir" not in args and "checkpoint" not in args:
        raise SystemExit("give run_dir=<run directory> or checkpoint=<file.pt>")
    return args
