"""Finding what a package's modules declare: the analyses and the experiment kinds are each a module ending with
``SPEC = <spec>``, so that adding one is adding a module and no registry lists them by hand."""

from __future__ import annotations

import importlib
import pkgutil
from typing import TypeVar

Spec = TypeVar("Spec")


def declared_specs(package: str, spec_type: type[Spec]) -> list[Spec]:
    """The ``SPEC`` of every module (or subpackage) of ``package`` that declares one of ``spec_type``, by name."""
    root = importlib.import_module(package)
    found = []
    for info in sorted(pkgutil.iter_modules(root.__path__), key=lambda m: m.name):
        spec = getattr(importlib.import_module(f"{package}.{info.name}"), "SPEC", None)
        if isinstance(spec, spec_type):
            found.append(spec)
    return found
