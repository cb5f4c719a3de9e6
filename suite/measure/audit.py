"""Self-contained artifacts: what a restore may read besides the artifact's own bytes.

The suite measures every artifact in a process that never ran the method's `compress`, so no
state left in the method object or in module globals reaches the measured model. What remains is
a file written elsewhere during the run (weights stashed in /tmp, in the home folder, beside the
plugin's code) and read back by `restore`. While a restore runs, a Python audit hook watches every
file opened for reading: one outside the artifact folder, last modified after the run began, is a
stash, and the run is refused (`NotSelfContained`). Code (`.py`, `.pyc`, shared libraries) and
the kernel's own trees (/proc, /sys, /dev) are not data and pass.

Limits, said plainly: only opens that go through Python (`open`, `os.open`, `io`, `torch.load` on
a path, numpy) raise audit events; a native reader (a Rust or C++ library opening a path itself)
is not seen.
"""
from __future__ import annotations

import os
import sys
import threading
from pathlib import Path
from typing import Any

CODE = (".py", ".pyc", ".so", ".pyd", ".pth")
SLACK_S = 2.0
SYSTEM = ("/proc/", "/sys/", "/dev/")


class NotSelfContained(RuntimeError):
    """The restore read a file written during the run that is not part of the artifact."""


class FileAudit:
    """Context manager: records the stash reads of the code it wraps (see the module docstring).

    `since`: the time (`time.time()`) the run began; files older than that cannot hold its state.
    File times are coarse (the kernel stamps them from a clock that lags by milliseconds; some file
    systems keep whole seconds), so a file stamped up to `SLACK_S` before `since` counts as written
    during the run.
    """

    _lock = threading.Lock()
    _active: list["FileAudit"] = []
    _installed = False

    def __init__(self, artifact_dir: str | os.PathLike[str], since: float):
        self.root = os.path.realpath(artifact_dir) + os.sep
        self.since = since
        self.stashes: list[str] = []

    def __enter__(self) -> "FileAudit":
        with FileAudit._lock:
            if not FileAudit._installed:  # an audit hook cannot be removed: one per process, idle when unused
                sys.addaudithook(_hook)
                FileAudit._installed = True
            FileAudit._active.append(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        with FileAudit._lock:
            FileAudit._active.remove(self)
        if exc[0] is None and self.stashes:
            shown = ", ".join(self.stashes[:3]) + (f" and {len(self.stashes) - 3} more" if len(self.stashes) > 3 else "")
            raise NotSelfContained(f"the restore read {shown}, written during the run and not part of the artifact: "
                                   "an artifact must hold everything its model needs")

    def check(self, path: Any, mode: Any, flags: Any) -> None:
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if not isinstance(path, (str, os.PathLike)) or not _reads(mode, flags):
            return
        full = os.path.realpath(os.fspath(path))
        if full.startswith(self.root) or full.startswith(SYSTEM) or full.endswith(CODE):
            return
        try:
            modified = os.stat(full).st_mtime
        except OSError:
            return
        if modified >= self.since - SLACK_S:
            self.stashes.append(str(Path(full)))


def _reads(mode: Any, flags: Any) -> bool:
    if isinstance(mode, str):
        return "r" in mode or "+" in mode
    if isinstance(flags, int):
        return flags & os.O_ACCMODE in (os.O_RDONLY, os.O_RDWR)
    return True


def _hook(event: str, args: tuple) -> None:
    if event != "open" or not FileAudit._active:
        return
    audit = FileAudit._active[-1]
    audit.check(*(tuple(args) + (None, None, None))[:3])
