"""How sure a ranking is: 95 % confidence intervals over seeds and paired comparisons between methods.

With a handful of seeds the seed-to-seed spread is often as large as the differences between
methods, so a table that only ranks means says more than the data do. Here every mean gets a 95 %
confidence interval (Student's t over seeds), and each method is compared with the method of
lowest mean and with the noise floor (a second oracle) by a **paired t-test over seeds**: seed s of
every model shares the forget set and the original model of seed s, so differences are taken seed
by seed. A method "cannot be told apart" from another when the two-sided p-value is at least
``ALPHA``. No correction for the number of comparisons is made: the marks say where the data are
too few to separate methods, not which method is better with a controlled error rate.

Pure functions; the tables (``tables.py``) and the README's generated sections
(``readme_tables.py``) both use them, so the two never disagree.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

ALPHA = 0.05
TEST_NAME = "two-sided paired t-test over seeds, α = 0.05, no multiplicity correction"


def _t_quantile(q: float, dof: int) -> float:
    from scipy.stats import t

    return float(t.ppf(q, dof))


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Confidence interval of the mean (Student's t); (nan, nan) with fewer than two values."""
    v = np.asarray([x for x in values if not math.isnan(x)], dtype=float)
    if len(v) < 2:
        return math.nan, math.nan
    half = _t_quantile(0.5 + level / 2, len(v) - 1) * float(np.std(v, ddof=1)) / math.sqrt(len(v))
    mean = float(np.mean(v))
    return mean - half, mean + half


def paired_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of a paired t-test on a[i] - b[i]; nan with fewer than two pairs.

    Identical differences on every seed: p = 1 when they are all zero (the same numbers), else 0
    (a constant non-zero difference: the t statistic is infinite).
    """
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    d = d[~np.isnan(d)]
    if len(d) < 2:
        return math.nan
    sd = float(np.std(d, ddof=1))
    mean = float(np.mean(d))
    if abs(mean) < 1e-12 and sd < 1e-12:  # the same numbers up to rounding
        return 1.0
    if sd == 0.0 or sd < 1e-12 * max(1.0, abs(mean)):
        return 0.0
    from scipy.stats import t

    stat = mean / (sd / math.sqrt(len(d)))
    return float(2.0 * t.sf(abs(stat), len(d) - 1))


@dataclass(frozen=True)
class Ranked:
    model: str
    mean: float
    std: float
    n: int
    ci_low: float
    ci_high: float
    best: bool
    p_vs_best: float     # nan for the best itself
    tied_with_best: bool | None  # None: too few common seeds to test
    p_vs_floor: float    # nan without a noise floor
    at_floor: bool | None  # cannot be told apart from the noise floor (or below it); None: untestable


def rank(per_seed: Mapping[str, Mapping[int, float]], methods: Sequence[str],
         floor: str | None = None) -> list[Ranked]:
    """The methods of ``methods`` (those present) by mean, with CIs and the two paired comparisons.

    ``per_seed``: model -> seed -> value, lower is better (Avg. Gap); ``floor``: the noise-floor
    model (compared with every method on the seeds both have).
    """
    per_seed = {m: {s: float(v) for s, v in values.items() if not math.isnan(float(v))}
                for m, values in per_seed.items()}
    present = [m for m in methods if per_seed.get(m)]
    if not present:
        return []

    def mean_of(m: str) -> float:
        return float(np.mean(list(per_seed[m].values())))

    best = min(present, key=lambda m: (mean_of(m), present.index(m)))

    def paired(m: str, other: str) -> float:
        seeds = sorted(set(per_seed[m]) & set(per_seed[other]))
        return paired_p([per_seed[m][s] for s in seeds], [per_seed[other][s] for s in seeds])

    rows = []
    for m in sorted(present, key=lambda m: (mean_of(m), present.index(m))):
        values = [per_seed[m][s] for s in sorted(per_seed[m])]
        low, high = t_interval(values)
        p_best = math.nan if m == best else paired(m, best)
        p_floor = paired(m, floor) if floor and per_seed.get(floor) else math.nan
        floor_mean = mean_of(floor) if floor and per_seed.get(floor) else math.nan
        rows.append(Ranked(
            model=m, mean=mean_of(m), std=float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            n=len(values), ci_low=low, ci_high=high, best=m == best, p_vs_best=p_best,
            tied_with_best=True if m == best else _verdict(p_best),
            p_vs_floor=p_floor,
            at_floor=(None if math.isnan(floor_mean) else True if mean_of(m) <= floor_mean else _verdict(p_floor)),
        ))
    return rows


def _verdict(p: float) -> bool | None:
    """Cannot be told apart (True), told apart (False), or too few seeds to say (None)."""
    return None if math.isnan(p) else bool(p >= ALPHA)


def mark(value: bool | None) -> str:
    return "–" if value is None else "yes" if value else "no"


def fmt_p(p: float) -> str:
    if math.isnan(p):
        return "–"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def p_text(p: float) -> str:
    """'p = 0.084' or 'p < 0.001' (for prose)."""
    text = fmt_p(p)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def fmt_ci(low: float, high: float, digits: int = 2) -> str:
    if math.isnan(low):
        return "–"
    return f"[{low:.{digits}f}, {high:.{digits}f}]"


def seeds_text(n: int) -> str:
    return f"{n} seed" + ("" if n == 1 else "s")


def names(rows: Sequence[Ranked], label=lambda m: m) -> str:
    return ", ".join(label(r.model) for r in rows) if rows else "none"


def verdict(rows: Sequence[Ranked], scenario: str, floor_row: Ranked | None, focus: str | None = "muda",
            label=lambda m: m, metric: str = "Avg. Gap (per seed)") -> str:
    """One paragraph, generated from ``rank``'s rows: the lowest mean, what ties with it, what sits at
    the noise floor, and where ``focus`` (MUDA) stands."""
    if not rows:
        return f"**{scenario}**: no method ran."
    best = rows[0]
    low, high = min(r.n for r in rows), max(r.n for r in rows)
    seeds = seeds_text(low) if low == high else f"{low}–{high} seeds"
    parts = [f"**{scenario}** ({seeds}): lowest {metric} {label(best.model)}, {best.mean:.2f} ± {best.std:.2f}"
             + (f" (95 % CI {fmt_ci(best.ci_low, best.ci_high)})." if not math.isnan(best.ci_low) else ".")]
    others = rows[1:]
    if others and all(r.tied_with_best is None for r in others):
        parts.append("Too few seeds to test any difference; read the order as noise.")
    elif others:
        tied = [r for r in others if r.tied_with_best]
        apart = [r for r in others if r.tied_with_best is False]
        parts.append(f"Cannot be told apart from it: {names(tied, label)} ({len(tied)} of {len(others)})."
                     if tied else "Every other method is worse than it (p < 0.05).")
        if apart and tied:
            parts.append(f"Worse than it (p < 0.05): {names(apart, label)}.")
    if floor_row is not None:
        at_floor = [r for r in rows if r.at_floor]
        untestable = all(r.at_floor is None for r in rows if not r.at_floor)
        parts.append(f"Noise floor (a second oracle) {floor_row.mean:.2f} ± {floor_row.std:.2f}; "
                     + (f"at or not told apart from it: {names(at_floor, label)}." if at_floor
                        else "no method can be compared with it." if untestable
                        else "every method is above it."))
    if focus:
        mine = next((r for r in rows if r.model == focus), None)
        if mine is not None:
            place = rows.index(mine) + 1
            if mine.best:
                stand = "has the lowest mean"
            elif mine.tied_with_best is None:
                stand = f"cannot be compared with {label(best.model)} (too few seeds)"
            elif mine.tied_with_best:
                stand = f"cannot be told apart from {label(best.model)} ({p_text(mine.p_vs_best)})"
            else:
                stand = f"is worse than {label(best.model)} ({p_text(mine.p_vs_best)})"
            parts.append(f"{label(focus)}: {mine.mean:.2f} ± {mine.std:.2f}, rank {place} of {len(rows)} by mean; "
                         f"it {stand}.")
    return " ".join(parts)
