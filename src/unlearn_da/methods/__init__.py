"""The method registry: name -> ``run(ctx, hp)``. ``<name>+da`` adds the DA regulariser."""

from __future__ import annotations

import importlib
from typing import Any
from collections.abc import Callable

# registry name -> module under unlearn_da.methods (imported on first use)
METHOD_MODULES: dict[str, str] = {
    "ft": "ft",
    "ga": "ga",
}


def get_method(name: str) -> Callable[[Any, dict[str, Any]], None]:
    from ..config import method_base

    base, _ = method_base(name)
    if base not in METHOD_MODULES:
        raise KeyError(f"unknown method '{name}'; allowed: {', '.join(sorted(METHOD_MODULES))}")
    module = importlib.import_module(f"{__name__}.{METHOD_MODULES[base]}")
    return module.run
