"""The record of the last ``reproduce`` run in a results folder: ``study.json``.

``reproduce`` into a folder that holds an earlier run's results rewrites only what it runs
this time; an experiment it skips, or a condition whose checkpoint is gone, keeps the
earlier run's files. The record lets the report tell them apart. It is written when the run
starts (no files yet, ``finished`` false), again after each experiment, and at the end, so
a run that stops part way is seen as such. It holds the run's settings and the SHA-256 of
every file the run wrote, by its path relative to the folder.

The report (:mod:`xai_loc.report.collect`) sorts each file of the folder it shows by
:func:`file_status`: written by the last run (``'current'``), written there after it
(``'rewritten'``: the run wrote that file, something replaced it since) or not written by
it (``'earlier'``: an earlier run's, or another command's).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from xai_loc.errors import InputError

__all__ = ["STATUS_TEXT", "STUDY_RECORD", "StudyRun", "file_status", "find_study_run", "read_study_run"]

#: The record's file name in a ``reproduce`` results folder.
STUDY_RECORD = "study.json"
_FORMAT, _VERSION = "xai-loc-study-run", 1
#: What each status says on the report page.
STATUS_TEXT = {
    "rewritten": "written after the last reproduce run of this folder (replaced since by another command)",
    "earlier": "not written by the last reproduce run of this folder: an earlier run's or another command's",
}


class StudyRun:
    """The record of one ``reproduce`` run, rewritten atomically as it goes.

    Parameters
    ----------
    root
        The run's results folder.
    settings
        What the run was asked (``quick``, ``skip``, ``conditions``, ``convention``, ...): JSON values.
    """

    def __init__(self, root: str | Path, settings: dict[str, Any]):
        self.root = Path(root)
        self.settings = dict(settings)
        self.files: dict[str, str] = {}
        self._write(finished=False)

    def add(self, paths) -> None:
        """Record files the run wrote (those below the folder; dicts and lists are flattened); rewrite the record."""
        from xai_loc.models.checkpoint import file_digest

        stack = [paths]
        while stack:
            item = stack.pop()
            if isinstance(item, dict):
                stack.extend(item.values())
            elif isinstance(item, (list, tuple)):
                stack.extend(item)
            elif item is not None:
                key = _key(self.root, item)
                if key is not None:  # what the report shows (stores elsewhere are not its)
                    self.files[key] = file_digest(item)
        self._write(finished=False)

    def finish(self) -> Path:
        """Mark the run finished; returns the record's path."""
        return self._write(finished=True)

    def _write(self, finished: bool) -> Path:
        from xai_loc.io import write_text_atomic

        record = {"format": _FORMAT, "version": _VERSION, "finished": finished, "settings": self.settings,
                  "files": dict(sorted(self.files.items()))}
        return write_text_atomic(self.root / STUDY_RECORD, json.dumps(record, indent=1, sort_keys=True) + "\n")


def _key(root: str | Path, path: str | Path) -> str | None:
    """The record's name of ``path``: relative to ``root``, links not followed (a result linked from elsewhere is
    named where it lies); None where it is not below ``root``."""
    path, root = Path(path).absolute(), Path(root).absolute()
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else None


def _texts(value: Any) -> bool:
    """Whether ``value`` is a list of strings."""
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def read_study_run(root: str | Path) -> dict[str, Any] | None:
    """The record of the last ``reproduce`` run in ``root`` (``None`` where there is none).

    Raises :class:`~xai_loc.errors.InputError` (one line) where the record is damaged.
    """
    path = Path(root) / STUDY_RECORD
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        ok = (record["format"], record["version"]) == (_FORMAT, _VERSION) and isinstance(record["finished"], bool) \
            and isinstance(record["settings"], dict) and isinstance(record["files"], dict) \
            and all(isinstance(v, str) for v in record["files"].values()) \
            and isinstance(record["settings"]["quick"], bool) \
            and all(_texts(record["settings"][key]) for key in ("conditions", "skipped", "missing_checkpoints"))
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        raise InputError(f"{path} is damaged (not an xai-loc study record of format {_FORMAT!r} version {_VERSION}); "
                         f"run 'xai-loc reproduce' again, or remove it to report the folder without it")
    return record


def find_study_run(folder: str | Path) -> tuple[Path, dict[str, Any] | None]:
    """The record of the ``reproduce`` run that ``folder`` belongs to: ``(its root, record)``. That is
    :data:`STUDY_RECORD` in ``folder`` itself, else the one in its parent folder where that run wrote files in
    ``folder`` (one condition of a run is reported with its run's record, each file keyed relative to the run's
    root); ``(folder, None)`` otherwise, a damaged or unrelated record above included."""
    folder = Path(folder).absolute()
    if (folder / STUDY_RECORD).exists():
        return folder, read_study_run(folder)
    parent = folder.parent
    if (parent / STUDY_RECORD).exists():
        try:
            record = read_study_run(parent)
        except InputError:  # the record of the folder above is not this folder's to refuse
            return folder, None
        if any(Path(key).parts[:1] == (folder.name,) for key in record["files"]):
            return parent, record
    return folder, None


def file_status(record: dict[str, Any] | None, root: str | Path, path: str | Path) -> str | None:
    """``'current'``, ``'rewritten'`` or ``'earlier'`` for a file below ``root`` (see the module); ``None``
    without a record."""
    from xai_loc.models.checkpoint import file_digest

    if record is None:
        return None
    key = _key(root, path)
    if key not in record["files"]:
        return "earlier"
    return "current" if file_digest(path) == record["files"][key] else "rewritten"
