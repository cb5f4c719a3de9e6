"""slimbench.suite: the harness, CLI, measurements and tracking.

Kept import-light on purpose: `slimbench --help` must not pay for torch.
"""
from importlib.metadata import PackageNotFoundError, version as _version

try:
    __version__ = _version("slimbench")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"
