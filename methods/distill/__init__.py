"""The distillation family: Hinton KD, decoupled KD, feature/attention distillation, and the
no-teacher control, all training a student built by the task's own builder.

`configs` (torch-free configs) and `plugins` (the registered methods); students, losses and
feature taps load when a method runs."""
from slimbench.methods.distill import plugins  # noqa: F401
