"""slimbench.core: the contracts every other part builds on, importing no other part of slimbench.

`registry` (one generic plugin registry), `config` (the `MethodConfig` base, spec parsing and
validation), `recipe` (training recipes, budgets and the step ledger), `task` (`TaskSpec`, what a
method may know about a task), `families` (method families and their colours) and `record` (the
typed run record and its reader). Torch-free, so `slimbench list` and `--help` stay fast.
"""
