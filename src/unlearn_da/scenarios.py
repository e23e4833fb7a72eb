"""Scenario names: ``random<P>`` (P % of train, drawn per seed) and ``class<C>`` (a whole class)."""

from __future__ import annotations

import re

from .errors import ConfigError

SCENARIO_RE = re.compile(r"^(?:random(?P<pct>\d+(?:\.\d+)?)|class(?P<cls>\d+))$")


def parse_scenario(name: str) -> tuple[str, float | int]:
    """``random10`` -> ("random", 10.0); ``class3`` -> ("class", 3)."""
    m = SCENARIO_RE.match(name)
    if not m:
        raise ConfigError(
            f"unknown scenario '{name}'; allowed forms: random<P> (P % of train, 0 < P < 100, "
            "e.g. random10) or class<C> (every train sample of class C, e.g. class0)"
        )
    if m.group("pct") is not None:
        return "random", float(m.group("pct"))
    return "class", int(m.group("cls"))
