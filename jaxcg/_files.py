"""Safe file handling shared by the writers and the CLI: no silent overwrite, settings that must
match on resume, and read errors that name the file and its role."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any


class OutputExistsError(FileExistsError, ValueError):
    """A finished (or partial) output exists and neither overwrite nor resume was asked for."""


class SettingsMismatchError(ValueError):
    """``resume`` was asked with settings that differ from the ones the output was written with."""


def refuse_existing(paths: Iterable[str | os.PathLike], what: str, overwrite: bool, resume_hint: bool = True) -> None:
    """Raise ``OutputExistsError`` naming the existing ``paths`` unless ``overwrite``."""
    existing = [str(p) for p in paths if Path(p).exists()]
    if existing and not overwrite:
        hint = "continue it with resume (--resume) or " if resume_hint else ""
        raise OutputExistsError(
            f"{what} {', '.join(repr(p) for p in existing)} already exist(s); {hint}replace "
            f"{'it' if len(existing) == 1 else 'them'} with overwrite=True (--overwrite)"
        )


def differing_settings(stored: Mapping[str, Any], wanted: Mapping[str, Any], keys: Iterable[str]) -> list[str]:
    """``"key: stored X, asked Y"`` for every key whose values differ (missing counts as None)."""
    return [
        f"{key}: stored {stored.get(key)!r}, asked {wanted.get(key)!r}"
        for key in keys if _normal(stored.get(key)) != _normal(wanted.get(key))
    ]


def _normal(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return value


def refuse_changed_settings(
    path: str | os.PathLike, stored: Mapping[str, Any], wanted: Mapping[str, Any], keys: Iterable[str],
    what: str = "configuration",
) -> None:
    """Raise ``SettingsMismatchError`` listing every differing key between a stored run and this one."""
    diff = differing_settings(stored, wanted, keys)
    if diff:
        raise SettingsMismatchError(
            f"cannot resume {str(path)!r}: {what} differs from the stored run ({'; '.join(diff)}); "
            "use the stored settings, or start anew with overwrite=True (--overwrite)"
        )


@contextlib.contextmanager
def reading(path: str | os.PathLike, role: str) -> Iterator[None]:
    """Re-raise any error while reading ``path`` as ``ValueError`` naming the file and its role.

    ``FileNotFoundError`` and ``ValueError``s that already name the file pass through unchanged."""
    try:
        yield
    except FileNotFoundError:
        raise
    except ValueError as err:
        if str(path) in str(err):
            raise
        raise ValueError(f"{role} {str(path)!r} is unreadable or malformed: {err}") from err
    except Exception as err:  # OSError, KeyError, zipfile.BadZipFile, h5py and pickle internals
        kind = type(err).__name__
        raise ValueError(f"{role} {str(path)!r} is unreadable, truncated or corrupt ({kind}: {err})") from err


def check_writable_folder(folder: str | os.PathLike, name: str = "--out") -> Path:
    """``folder`` as a Path, or a ValueError naming ``name`` if it cannot be created or written."""
    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{name} {str(path)!r} exists and is not a folder")
    ancestor = path
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ValueError(f"{name} {str(path)!r} cannot be created: {str(ancestor)!r} is not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ValueError(f"{name} {str(path)!r} is not writable: no write permission on {str(ancestor)!r}")
    return path
