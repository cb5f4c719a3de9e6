"""slimbench.methods: compression method plugins and their kernels.

Public API for plugin authors: `Method`, `MethodConfig`, `setting`, `check`, `Compressed`,
`CompressionContext`, `register_method`, and `METHODS` (the registry) / `create_method`.
Shared layer tools (selection, swapping, calibration, storage formats, resizing) are in
`slimbench.methods.common`.
"""
from slimbench.core.config import ConfigError, MethodConfig, check, setting  # noqa: F401
from slimbench.core.families import FAMILIES  # noqa: F401
from slimbench.methods.base import (  # noqa: F401
    METHODS, Compressed, CompressionContext, Method, Unsupported, as_compressed, register_method)
from slimbench.methods.pipeline import create as create_method  # noqa: F401  (one method, or "a+b+c")
