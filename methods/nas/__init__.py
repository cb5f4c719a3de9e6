"""The architecture-search family: random search (the control), regularised evolution,
REINFORCE and Optuna's TPE / NSGA-II over declared search spaces (`spaces/*.yaml`), every
candidate built by the task's own builder and tracked as a nested run.

`configs`, `space`, `strategies` and `plugins` are torch-free; `procedure` (the live search)
loads when a method runs."""
from slimbench.methods.nas import plugins  # noqa: F401
