"""Maps the top-level folders into the `slimbench` namespace.

The package list is generated, because a hand-written list silently drops new
subpackages from the wheel. `api/` is the top-level `slimbench` package itself: its
`__init__.py` holds the Python API's names (`slimbench.compress`, ...), imported lazily.
"""
from setuptools import find_packages, setup

_ROOTS = ("core", "suite", "methods", "tasks", "leaderboard")

packages, package_dir = ["slimbench"], {"slimbench": "api"}
for root in _ROOTS:
    package_dir[f"slimbench.{root}"] = root
    packages.append(f"slimbench.{root}")
    packages += [f"slimbench.{root}.{sub}" for sub in find_packages(root)]

setup(packages=packages, package_dir=package_dir)
