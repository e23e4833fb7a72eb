"""Scenario names: ``random<P>`` (P % of train, drawn per seed), ``class<C>`` (a whole class) and
``backdoor<P>`` (P % of train, from the non-target classes, poisoned with a trigger and the target label)."""

from __future__ import annotations

import re
from decimal import Decimal

from .errors import ConfigError

SCENARIO_RE = re.compile(
    r"^(?:random(?P<pct>\d+(?:\.\d+)?)|class(?P<cls>\d+)|backdoor(?P<poison>\d+(?:\.\d+)?))$"
)


def parse_scenario(name: str) -> tuple[str, float | int]:
    """``random10`` -> ("random", 10.0); ``class3`` -> ("class", 3); ``backdoor10`` -> ("backdoor", 10.0)."""
    m = SCENARIO_RE.match(name)
    if not m:
        raise ConfigError(
            f"unknown scenario '{name}'; allowed forms: random<P> (P % of train, 0 < P < 100, "
            "e.g. random10), class<C> (every train sample of class C, e.g. class0) or backdoor<P> "
            "(P % of train poisoned with a trigger, 0 < P < 100, e.g. backdoor10)"
        )
    if m.group("pct") is not None:
        kind, value = "random", float(m.group("pct"))
    elif m.group("poison") is not None:
        kind, value = "backdoor", float(m.group("poison"))
    else:
        kind, value = "class", int(m.group("cls"))
    canonical = scenario_name(kind, value)
    if name != canonical:
        raise ConfigError(f"scenario '{name}': write it as '{canonical}' (one spelling per forget set, so that "
                          "the same forget set is never run and stored twice under two names)")
    return kind, value


def scenario_name(kind: str, value: float | int) -> str:
    """The one spelling of a scenario: no leading zeros, no trailing ``.0`` (``random10``, ``random0.5``)."""
    if kind == "class":
        return f"class{int(value)}"
    text = format(Decimal(repr(float(value))), "f")  # the shortest round-trip digits, never an exponent
    return f"{kind}{text.rstrip('0').rstrip('.') if '.' in text else text}"


def is_backdoor(name: str) -> bool:
    """Whether ``name`` is a backdoor scenario (its original model is trained on poisoned data)."""
    return name.startswith("backdoor")
