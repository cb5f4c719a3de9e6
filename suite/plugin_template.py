"""What `slimbench plugin new NAME` writes: a package that installs one method through an entry point.

The method it starts with is real but plain (magnitude zeroing of Linear/Conv2d weights, stored
dense), so the package passes `slimbench plugin check` as written and the author replaces the
body, not the plumbing.
"""
from __future__ import annotations

import re
from pathlib import Path

NAME = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*")

PYPROJECT = '''[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "slimbench-{dist}"
version = "0.1.0"
description = "The {name} compression method for slimbench."
readme = "README.md"
requires-python = ">=3.10"
dependencies = ["slimbench"]

[project.optional-dependencies]
test = ["pytest"]

# slimbench finds methods through this group: the key is the name users type.
[project.entry-points."slimbench.methods"]
"{name}" = "{module}:{cls}"

[tool.setuptools]
packages = ["{module}"]
'''

MODULE = '''"""{name}: a slimbench compression method.

slimbench calls `compress(model, ctx)` once per run on a copy of the task's trained model and
measures what comes back itself: accuracy on the test split, the bytes of the saved artifact,
FLOPs and latency of the model reloaded from those bytes. `ctx` holds the train/validation
batches, the calibration set, the budgets (train only through `ctx.train` / `ctx.trainer`, so the
steps are counted) and the seed. The test split is never yours to read.
"""
from __future__ import annotations

from dataclasses import dataclass

from slimbench.methods import Method, MethodConfig, setting


@dataclass(frozen=True)
class {cfg}(MethodConfig):
    """One field per setting: typed, defaulted, checked, shown by `slimbench list`."""

    sparsity: float = setting(0.5, "fraction of each Linear/Conv2d weight set to zero (smallest magnitude first)",
                              ge=0.0, lt=1.0)


class {cls}(Method):
    family = "pruning"  # quantization | pruning | distillation | low-rank | nas
    description = "Magnitude zeroing of Linear/Conv2d weights (a starting point: replace with your method)."
    config_cls = {cfg}

    def compress(self, model, ctx):
        import torch  # imported here: `slimbench list` must not pay for torch
        from torch import nn

        with torch.no_grad():
            for layer in model.modules():
                if type(layer) in (nn.Linear, nn.Conv2d):
                    w = layer.weight
                    k = int(self.config.sparsity * w.numel())
                    if k:
                        cut = w.abs().flatten().kthvalue(k).values
                        w.masked_fill_(w.abs() <= cut, 0.0)
        # Return the model (its state_dict is what is saved), or slimbench.methods.Compressed
        # (model, meta, metrics) to store packed tensors with what `restore` needs, and to record
        # figures of your own. A model whose layers you replace needs `restore` too: see
        # slimbench.methods.Method.restore.
        return model
'''

TEST = '''"""slimbench's own conformance checks on this plugin: artifact round trip onto a freshly built model,
size equal to bytes on disk, determinism, budget kept, no test-split access, on a tiny CNN and a
tiny transformer. Each method runs in a subprocess with a timeout."""
import json
import sys
from pathlib import Path

from slimbench.suite.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the package, installed or not


def test_passes_slimbench_conformance(capsys):
    code = main(["plugin", "check", "{module}:{cls}", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["passed"], json.dumps(report, indent=1)
'''

README = '''# slimbench-{dist}

The `{name}` compression method for slimbench, installed as a plugin: no
change to slimbench is needed.

```bash
pip install -e .                       # registers the method through the slimbench.methods entry point
slimbench list methods                 # {name} appears with its config fields
slimbench run --method {name}:sparsity=0.7 --profile quick
slimbench plugin check {name}          # the conformance suite, as the leaderboard requires
pytest                                 # the same check, as a test
```

## Making it yours

- `{module}/__init__.py`: `{cfg}` holds the settings (one typed field each, with help text and
  bounds); `{cls}.compress(model, ctx)` does the work. Train only through `ctx.train` /
  `ctx.trainer` (the budget ledger counts steps), select on validation data, never the test split.
- To make the artifact smaller, store packed tensors: return `Compressed(model, meta, metrics)`
  whose model holds them as buffers, and implement `restore(model, tensors, meta)` to rebuild
  the layers on a freshly built model. slimbench measures the size from the saved bytes.
- `family` puts the method in its section of the leaderboard; bump `version` when the
  algorithm changes so earlier results are not reused.
'''


def write_plugin(name: str, where: Path) -> Path:
    """Write the package for method `name` under `where`; returns its folder. Refuses a name that is
    not a method name, one already registered, and an existing folder."""
    if not NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a method name: lowercase letters, digits and '_', dot-separated "
                         "parts each starting with a letter (e.g. myq or mylab.prune)")
    from slimbench.methods import METHODS
    if name in METHODS:
        raise ValueError(f"{name!r} is already a method ({METHODS.origin(name)}); choose another name")
    module = "slimbench_" + name.replace(".", "_")
    camel = "".join(part.capitalize() for part in re.split(r"[._]", name) if part)
    fields = {"name": name, "dist": name.replace(".", "-").replace("_", "-"), "module": module,
              "cls": f"{camel}Method", "cfg": f"{camel}Config"}
    root = Path(where) / f"slimbench-{fields['dist']}"
    if root.exists():
        raise ValueError(f"{root} already exists; remove it or pass --dir elsewhere")
    (root / module).mkdir(parents=True)
    (root / "tests").mkdir()
    (root / "pyproject.toml").write_text(PYPROJECT.format(**fields))
    (root / module / "__init__.py").write_text(MODULE.format(**fields))
    (root / "tests" / "test_conformance.py").write_text(TEST.format(**fields))
    (root / "README.md").write_text(README.format(**fields))
    return root
