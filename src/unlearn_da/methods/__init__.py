"""The method registry: name -> ``run(ctx, hp)``. ``<name>+da`` adds the DA regulariser."""

from __future__ import annotations

import importlib
from typing import Any
from collections.abc import Callable

# registry name -> module under unlearn_da.methods (imported on first use)
METHOD_MODULES: dict[str, str] = {
    "ft": "ft",
    "ga": "ga",
    "neggrad_plus": "neggrad_plus",
    "rl": "rl",
    "boundary_shrink": "boundary_shrink",
    "l1_sparse": "l1_sparse",
    "salun": "salun",
    "scrub": "scrub",
    "bad_teacher": "bad_teacher",
    "ssd": "ssd",
    "muda": "muda",
}

# other method modules a method's module imports (part of its code hash)
METHOD_DEPENDENCIES: dict[str, tuple[str, ...]] = {
    "salun": ("rl",),
    "muda": ("rl", "da"),
}

# methods that always use the unlearn.da block (their params carry it)
USES_DA_CONFIG = {"muda"}

# methods that cannot take the "+da" plug-in, and why
NO_DA_PLUGIN = {
    "ssd": "SSD has no training loop to add the DA term to",
    "muda": "MUDA already contains the DA term; set unlearn.muda.lambda_da instead",
}


def method_base(name: str) -> tuple[str, bool]:
    """``salun+da`` -> ("salun", True)."""
    if name.endswith("+da"):
        return name[: -len("+da")], True
    return name, False


def get_method(name: str, source: dict[str, str] | None = None) -> Callable[[Any, dict[str, Any]], None]:
    """A method's ``run``: a built-in's, or with ``source`` (``unlearn.external``) the user's (``external.py``)."""
    base, _ = method_base(name)
    if source is not None:
        from .external import load_run

        return load_run(base, source)
    if base not in METHOD_MODULES:
        raise KeyError(f"unknown method '{name}'; allowed: {', '.join(sorted(METHOD_MODULES))}")
    module = importlib.import_module(f"{__name__}.{METHOD_MODULES[base]}")
    return module.run
