"""The tuning candidates: an equal, seeded budget per method, spent in two rounds, then the DA weight.

Every base method in ``tuning.space`` gets exactly ``tuning.budget`` candidates (issue 14):

* round 1, ``budget - widen`` candidates: a seeded Latin-hypercube sample of the declared
  ranges (log-uniform for ``log`` ranges such as learning rates, one stratum per candidate
  for every numeric key, categorical values spread evenly);
* round 2, ``widen`` candidates, planned from round 1's scores: if the best candidate's
  value of a numeric key lies in the outermost stratum of its range, that key's range is
  widened beyond the edge (by half the declared span, at most a factor 10 for a ``log`` range, never
  past ``limit``): a *widening*;
  otherwise the range narrows around the best (a *refinement*). Categorical keys keep the
  best's value. Either way round 2 spends the same budget, so no method gets more tries.

``<method>+da`` variants reuse their base method's chosen values and try each weight of
one grid shared by all of them (``tuning.da_weights``). Names: ``<method>__t<NN>`` (round 1),
``<method>__w<NN>`` (round 2), ``<method>__d<NN>`` (DA weight, run as ``<name>+da``).
Pure functions; the Snakemake checkpoints of ``tune.smk`` call them through the CLI.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

DA_WEIGHT = "da_weight"  # the key of a DA-weight candidate's spec (not a method hyper-parameter)


KINDS = ("log", "uniform", "int", "choice")


def parse_range(spec: Sequence[Any] | Mapping[str, Any]) -> dict[str, Any]:
    """``[log|uniform|int, low, high(, limit_low, limit_high)]`` or ``[choice, v1, v2, ...]`` -> a dict.

    A list (not a mapping) in the config, so that a profile's range replaces the base's whole
    when Snakemake merges the config files (mappings would be merged key by key).
    """
    if isinstance(spec, Mapping):
        return dict(spec)
    if not spec or spec[0] not in KINDS:
        raise ValueError(f"a search range starts with one of {', '.join(KINDS)}: {list(spec)}")
    kind = spec[0]
    if kind == "choice":
        if len(spec) < 2:
            raise ValueError(f"a choice needs at least one value: {list(spec)}")
        return {"choice": list(spec[1:])}
    if len(spec) not in (3, 5):
        raise ValueError(f"a {kind} range is [{kind}, low, high] or [{kind}, low, high, limit_low, limit_high]: "
                         f"{list(spec)}")
    out: dict[str, Any] = {kind: [spec[1], spec[2]]}
    if len(spec) == 5:
        out["limit"] = [spec[3], spec[4]]
    return out


def parse_space(space: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {key: parse_range(spec) for key, spec in space.items()}


def _kind(spec: Mapping[str, Any]) -> str:
    kinds = [k for k in ("log", "uniform", "int", "choice") if k in spec]
    if len(kinds) != 1:
        raise ValueError(f"a search range needs exactly one of log, uniform, int, choice: {dict(spec)}")
    return kinds[0]


def _to_unit(kind: str, lo: float, hi: float, value: float) -> float:
    if hi == lo:
        return 0.5
    if kind == "log":
        return (math.log(value) - math.log(lo)) / (math.log(hi) - math.log(lo))
    return (value - lo) / (hi - lo)


def _from_unit(kind: str, lo: float, hi: float, u: float) -> float | int:
    if kind == "log":
        return float(f"{math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo))):.3g}")
    if kind == "int":
        return int(min(max(round(lo - 0.5 + u * (hi - lo + 1)), lo), hi))
    return float(f"{lo + u * (hi - lo):.3g}")


def _rng(seed: int, method: str, round_name: str) -> np.random.Generator:
    return np.random.default_rng([int(seed), zlib.crc32(method.encode()), zlib.crc32(round_name.encode())])


def _sample(space: Mapping[str, Mapping[str, Any]], n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    """``n`` points: per numeric key one uniform draw in each of ``n`` strata, shuffled; choices evenly."""
    columns: dict[str, list[Any]] = {}
    space = parse_space(space)
    for key in sorted(space):
        spec = space[key]
        kind = _kind(spec)
        if kind == "choice":
            values = [spec["choice"][i % len(spec["choice"])] for i in range(n)]
            columns[key] = [values[i] for i in rng.permutation(n)]
            continue
        lo, hi = spec[kind]
        units = (rng.permutation(n) + rng.uniform(size=n)) / n
        columns[key] = [_from_unit(kind, lo, hi, float(u)) for u in units]
    return [{k: columns[k][i] for k in columns} for i in range(n)]


def round1(space: Mapping[str, Mapping[str, Mapping[str, Any]]], budget: int, widen: int,
           seed: int) -> dict[str, dict[str, Any]]:
    """``<method>__t<NN>`` -> {base, values...}: round 1 of every method."""
    out: dict[str, dict[str, Any]] = {}
    for method in sorted(space):
        for i, values in enumerate(_sample(space[method], budget - widen, _rng(seed, method, "round1"))):
            out[f"{method}__t{i:02d}"] = {"base": method, **values}
    return out


def _limits(kind: str, spec: Mapping[str, Any]) -> tuple[float, float]:
    if "limit" in spec:
        return tuple(spec["limit"])  # type: ignore[return-value]
    lo, hi = spec[kind]
    if kind == "log":
        return 0.0, math.inf
    if kind == "int":
        return 1, math.inf
    return lo, hi  # a uniform range is not widened without a declared limit


def round2_ranges(space: Mapping[str, Mapping[str, Any]], best: Mapping[str, Any],
                  n1: int) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Round 2's ranges around round 1's best, and the keys whose best lay on an edge (widened)."""
    ranges: dict[str, dict[str, Any]] = {}
    edges: list[str] = []
    space = parse_space(space)
    for key in sorted(space):
        spec = space[key]
        kind = _kind(spec)
        if kind == "choice":
            ranges[key] = {"choice": [best[key]]}
            continue
        lo, hi = spec[kind]
        u = _to_unit(kind, lo, hi, best[key])
        stratum = 1.0 / max(n1, 1)
        lim_lo, lim_hi = _limits(kind, spec)
        if u <= stratum or u >= 1 - stratum:  # the outermost stratum: widen beyond the edge
            at_low = u <= stratum
            reach = 0.5 if kind != "log" else min(0.5, math.log(10) / max(math.log(hi / lo), 1e-12))
            a, b = (-reach, stratum) if at_low else (1 - stratum, 1 + reach)
            edges.append(f"{key}={best[key]} ({'low' if at_low else 'high'} edge of [{lo}, {hi}])")
        else:  # refine: one stratum either side of the best
            a, b = u - stratum, u + stratum
        new_lo = _from_unit_raw(kind, lo, hi, a)
        new_hi = _from_unit_raw(kind, lo, hi, b)
        new_lo, new_hi = max(new_lo, lim_lo), min(new_hi, lim_hi)
        if kind == "log" and new_lo <= 0:
            new_lo = best[key] / 10
        if kind == "int":
            new_lo, new_hi = int(math.ceil(new_lo)), int(math.floor(new_hi))
        else:
            new_lo, new_hi = float(f"{new_lo:.3g}"), float(f"{new_hi:.3g}")
        ranges[key] = {kind: [new_lo, max(new_hi, new_lo)]}
    return ranges, edges


def _from_unit_raw(kind: str, lo: float, hi: float, u: float) -> float:
    if kind == "log":
        return math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))
    return lo + u * (hi - lo)


def round2(space: Mapping[str, Mapping[str, Mapping[str, Any]]], round1_specs: Mapping[str, Mapping[str, Any]],
           scores: Mapping[str, float], budget: int, widen: int, seed: int) -> tuple[dict[str, dict], dict[str, dict]]:
    """(``<method>__w<NN>`` -> spec, method -> {kind, edges, best, ranges}) from round 1's mean scores."""
    out: dict[str, dict[str, Any]] = {}
    info: dict[str, dict[str, Any]] = {}
    n1 = budget - widen
    for method in sorted(space):
        names = [n for n, s in round1_specs.items() if s["base"] == method and n in scores]
        if not names:
            raise ValueError(f"round 1 of {method} has no scored candidate")
        best_name = min(names, key=lambda n: (scores[n], n))
        best = {k: v for k, v in round1_specs[best_name].items() if k != "base"}
        ranges, edges = round2_ranges(space[method], best, n1)
        kind = ("widen" if edges else "refine") if widen else "none"  # none: no round 2 (widen 0)
        info[method] = {"kind": kind, "edges": edges, "best": best_name,
                        "ranges": ranges}
        for i, values in enumerate(_sample(ranges, widen, _rng(seed, method, "round2"))):
            out[f"{method}__w{i:02d}"] = {"base": method, **values}
    return out, info


def da_round(chosen: Mapping[str, Mapping[str, Any]], da_methods: Sequence[str],
             weights: Sequence[float]) -> dict[str, dict[str, Any]]:
    """``<method>__d<NN>`` -> {base, chosen values..., da_weight}: run as ``<name>+da``."""
    out: dict[str, dict[str, Any]] = {}
    for method in sorted(da_methods):
        if method not in chosen:
            continue
        for i, w in enumerate(weights):
            out[f"{method}__d{i:02d}"] = {"base": method, **chosen[method]["values"], DA_WEIGHT: w}
    return out
