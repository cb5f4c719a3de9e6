"""Where a number came from: code version, library versions, hardware, threads."""
from __future__ import annotations

import functools
import os
import platform
import subprocess
from pathlib import Path
from typing import Any


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """The commit of the slimbench checkout (with '+dirty' for uncommitted changes), or 'unknown'."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: str) -> str:
    import torch
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return cpu_model()


def collect(device: str, threads: int) -> dict[str, Any]:
    import torch

    from slimbench.suite import __version__
    return {
        "git_commit": git_commit(), "slimbench": __version__, "torch": torch.__version__,
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "device_name": device_name(device), "cpu_model": cpu_model(), "threads": threads,
        "cpu_count": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
    }
