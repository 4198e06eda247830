"""The ``key=value`` argument style of the project's module CLIs (``agent.analyze``, ``agent.evaluate``, ``agent.report``)."""

from __future__ import annotations


def parse(argv: list[str], keys: tuple[str, ...], one_of: tuple[str, ...] = ("run_dir", "checkpoint")) -> dict[str, str]:
    """``key=value`` arguments -> dict, rejecting unknown keys; one of ``one_of`` required (when given).

    Shared by the analysis, evaluation and report CLIs.
    """
    args = {}
    for item in argv:
        key, sep, value = item.partition("=")
        if not sep or key not in keys:
            raise SystemExit(f"bad argument {item!r}; expected key=value with key in {keys}")
        args[key] = value
    if one_of and not any(k in args for k in one_of):
        raise SystemExit("give " + " or ".join(f"{k}=<{k.replace('_', ' ')}>" for k in one_of))
    return args
