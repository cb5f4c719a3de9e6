"""Where a number came from: code version, library versions, hardware and its capabilities, threads.

Two machines can report the same CPU model name and still run different kernels (a VM that
hides AVX-512 or VNNI): the instruction-set capability PyTorch dispatches on, and the flags
that decide int8/bf16 speed, are recorded with every run and are part of its device label.
"""
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


# /proc/cpuinfo flags that decide which CPU kernels run (int8 dot products, bf16, matrix units)
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile",
             "amx_int8", "amx_bf16", "asimd", "sve")


@functools.lru_cache(maxsize=1)
def cpu_flags() -> tuple[str, ...]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                have = set(line.split(":", 1)[1].split())
                return tuple(f for f in CPU_FLAGS if f in have)
    except OSError:
        pass
    return ()


def capability(device: str) -> dict[str, Any]:
    """CPU: {"isa": torch's dispatch capability (AVX2, AVX512...), "flags": [...]};
    CUDA: {"compute_capability": "9.0"}."""
    import torch
    if device.startswith("cuda") and torch.cuda.is_available():
        major, minor = torch.cuda.get_device_capability(torch.device(device))
        return {"compute_capability": f"{major}.{minor}"}
    try:
        isa = torch.backends.cpu.get_cpu_capability()
    except (AttributeError, RuntimeError):  # an old or unusual build
        isa = None
    return {"isa": isa, "flags": list(cpu_flags())}


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
        "cpu_capability": capability("cpu"),
        "cpu_count": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
    }
