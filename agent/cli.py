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


def parse_paths(argv: list[str], keys: tuple[str, ...]) -> tuple[list[str], dict[str, str]]:
    """Positional paths and ``key=value`` options (an argument is an option when its key is in ``keys``,
    so a path with ``=`` in it stays a path); at least one path required."""
    flags = [a for a in argv if a.startswith("-")]
    if flags:
        raise SystemExit(f"bad argument {flags[0]!r}; options are key=value with key in {keys}")
    is_option = ["=" in a and a.partition("=")[0] in keys for a in argv]
    args = parse([a for a, o in zip(argv, is_option) if o], keys, one_of=())
    paths = [a for a, o in zip(argv, is_option) if not o]
    if not paths:
        raise SystemExit("give one or more directories")
    return paths, args
