"""Run settings as TOML: ``jaxcg COMMAND --config FILE.toml`` reads them, and every run writes its
full resolved settings beside its output so that it can be repeated exactly.

A config file holds the command's options by name (``batch-size`` or ``batch_size``), e.g.::

    data = "alanine.h5"
    selection = "name CA"
    epochs = 50
    features = 64

Options given on the command line override the file. Unknown names and values outside an
option's choices are refused with an error that names them.
"""

from __future__ import annotations

import argparse
import json
import tomllib
from pathlib import Path
from typing import Any

#: Arguments that say what to do with an output, not how to make it: never recorded.
_NOT_SETTINGS = ("func", "command", "config", "resume", "overwrite")
#: Name of the resolved-settings file a command writes into its output folder.
CONFIG_NAME = "jaxcg-{command}.toml"


def _subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices.get(command)
    return None


def _config_path(argv: list[str]) -> str | None:
    for i, token in enumerate(argv):
        if token == "--config" and i + 1 < len(argv):
            return argv[i + 1]
        if token.startswith("--config="):
            return token.split("=", 1)[1]
    return None


def parse_with_config(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """``parser.parse_args(argv)`` with the defaults of the chosen command taken from the TOML file
    given by ``--config`` (command-line options win)."""
    path = _config_path(argv)
    command = next((token for token in argv if not token.startswith("-")), None)
    sub = _subparser(parser, command) if command else None
    if path is not None and sub is not None:
        try:
            values = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as err:
            parser.error(f"--config {path!r}: cannot read it as TOML ({err})")
        actions = {a.dest: a for a in sub._actions if a.dest not in ("help", "config", "func")}
        defaults: dict[str, Any] = {}
        for key, value in values.items():
            dest = key.replace("-", "_")
            if dest not in actions:
                sub.error(f"--config {path!r}: unknown option {key!r} for `jaxcg {command}` "
                          f"(known: {', '.join(sorted(a.replace('_', '-') for a in actions))})")
            action = actions[dest]
            if action.choices is not None and value not in action.choices:
                sub.error(f"--config {path!r}: {key} = {value!r} is not one of {list(action.choices)}")
            defaults[dest] = value
            action.required = False
        for group in sub._mutually_exclusive_groups:  # e.g. --ns | --frames, given by the file
            if any(a.dest in defaults for a in group._group_actions):
                group.required = False
        sub.set_defaults(**defaults)
    return parser.parse_args(argv)


def _toml_value(value: Any) -> str:
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, bool | int | float | str):
        return json.dumps(value)  # JSON's true/false, numbers and escaped strings are valid TOML
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} to TOML")


def write_resolved(args: argparse.Namespace, path: str | Path) -> Path:
    """Write every option of ``args`` as TOML to ``path`` (None values, ``--resume`` and
    ``--overwrite`` left out); passing it back with ``--config`` repeats the run."""
    lines = [f"# jaxcg {args.command}: resolved settings; repeat with `jaxcg {args.command} --config {Path(path).name}`"]
    for key, value in sorted(vars(args).items()):
        if key in _NOT_SETTINGS or value is None:
            continue
        lines.append(f"{key.replace('_', '-')} = {_toml_value(value)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def resolved_path(args: argparse.Namespace) -> Path:
    """Where a command writes its resolved settings: inside an output folder, or beside an output
    file (``OUT.toml`` for ``jaxcg reference --out OUT.h5``)."""
    out = Path(args.out)
    if out.suffix in (".h5", ".hdf5"):
        return out.with_suffix(".toml")
    return out / CONFIG_NAME.format(command=args.command)
