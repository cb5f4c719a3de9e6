"""slimbench.methods: compression method plugins and their kernels.

Public API: `METHODS` (the registry), `register_method`, `create_method`, `Method`,
`MethodConfig`, `CompressionContext`.
"""
from slimbench.methods.base import (  # noqa: F401
    FAMILIES, METHODS, CompressionContext, Method, MethodConfig, create_method, register_method)
