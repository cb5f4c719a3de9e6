"""The pruning family: unstructured (magnitude, a random control, sensitivity-allocated,
L1 / group-lasso trained), N:M semi-structured and structured (channels, heads, neurons).

`configs` (torch-free configs) and `plugins` (the registered methods); the masks, procedures,
sparse storage, structured surgery and kernels load when a method runs."""
from slimbench.methods.prune import plugins  # noqa: F401
