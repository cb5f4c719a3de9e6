"""Maps the top-level folders into the `slimbench` namespace.

The package list is generated, because a hand-written list silently drops new
subpackages from the wheel; there is no `slimbench/__init__.py` (implicit namespace).
"""
from setuptools import find_packages, setup

_ROOTS = ("core", "suite", "methods", "tasks", "leaderboard")

packages, package_dir = [], {}
for root in _ROOTS:
    package_dir[f"slimbench.{root}"] = root
    packages.append(f"slimbench.{root}")
    packages += [f"slimbench.{root}.{sub}" for sub in find_packages(root)]

setup(packages=packages, package_dir=package_dir)
