"""The result tables, verdicts and figure of README.md and docs/, generated from the shipped
expected-results files, and the cost of the CIFAR-10 paper profile, counted from its config.

Each generated block sits between ``<!-- generated: NAME -->`` and ``<!-- end generated -->`` in
README.md or a page of docs/; ``python -m unlearn_da readme-tables`` rewrites every block from
``expected/*.json`` (``reproduction.py``) or from a config profile (``workload.py``) and draws the
figures of ``FIGURES``; ``--check`` fails when a page differs from what it would write (a test runs
it), so a number in the documentation is always one the project ships and can re-make.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..core.errors import ArtifactError
from .reproduction import load_expected
from ..reporting.tables import REFERENCE_ROWS, add_oracle_gaps, per_seed_values, salun_avg_gap
from ..reporting.verdicts import TEST_NAME, Ranked, fmt_ci, fmt_p, mark, rank, seeds_text, verdict

BLOCK = re.compile(r"(<!-- generated: (?P<name>[a-z0-9_-]+) -->\r?\n)(?P<body>.*?)(<!-- end generated -->)", re.S)


def long_table(record: dict[str, Any], scenario: str) -> pd.DataFrame:
    """One row per (model, seed, metric) of ``scenario``, with the oracle gaps and Avg. Gap added."""
    rows = []
    for key, entry in record["models"].items():
        parts = key.split("/")
        if len(parts) != 3 or parts[0] != scenario or "metrics" not in entry:
            continue
        seed = int(parts[1].removeprefix("seed"))
        for metric, value in entry["metrics"].items():
            rows.append({"model": parts[2], "seed": seed, "scenario": scenario, "metric": metric,
                         "value": math.nan if value is None else float(value)})
    if not rows:
        raise ArtifactError(f"the expected results of run {record['run']} hold no scenario '{scenario}'")
    return add_oracle_gaps(pd.DataFrame(rows, columns=["model", "seed", "scenario", "metric", "value"]))


def _mean_std(values: dict[int, float]) -> str:
    v = list(values.values())
    return f"{np.mean(v):.2f} ± {(np.std(v, ddof=1) if len(v) > 1 else 0.0):.2f}"


def _row(r: Ranked, label: str, salun: dict[str, float]) -> str:
    return (f"| {label} | {_salun_cell(salun, r.model)} | {r.mean:.2f} ± {r.std:.2f} | {fmt_ci(r.ci_low, r.ci_high)} | "
            f"{mark(r.tied_with_best)} ({fmt_p(r.p_vs_best)}) | {mark(r.at_floor)} ({fmt_p(r.p_vs_floor)}) |")


def _salun_cell(salun: dict[str, float], model: str) -> str:
    return f"{salun[model]:.2f}" if model in salun else "–"


def made_on(record: dict[str, Any]) -> str:
    k = (record.get("made_on") or {}).get("kernels") or {}
    cpu = ", ".join(filter(None, [k.get("vendor"), k.get("machine", "?"), " ".join(k.get("cpu_flags") or [])]))
    return (f"made on {k.get('cpu', 'an unrecorded CPU')} ({cpu}), "
            f"{k.get('cpu_kernels', '?')} CPU kernels (ATen {k.get('aten_capability', '?')}), "
            f"torch {(record.get('made_on') or {}).get('torch', '?')}")


def avg_gap_block(record: dict[str, Any], source: str) -> str:
    """Per scenario: the references, then the methods by mean Avg. Gap with 95 % CIs and the two paired
    comparisons; then the generated verdict of each scenario."""
    lines = [f"From `{source}` ({seeds_text(len(record['seeds']))}, {made_on(record)}). Avg. Gap to the oracle "
             "(UA, RA, TA, MIA-Eff.; class-wise TA on the remaining classes), lower is better, in two forms: "
             "SalUn's (the gaps of the seed means, one value) and per seed (each seed's gap to its own "
             "oracle: mean ± std over seeds, 95 % CI of the mean; never smaller than SalUn's). Ranked by the "
             "per-seed form; ≈ lowest / ≈ floor: cannot be told apart from the method of lowest mean / from "
             f"the noise floor ({TEST_NAME}; p in parentheses; – with one seed).", ""]
    verdicts = []
    for scenario in record["scenarios"]:
        long = long_table(record, scenario)
        values, salun = per_seed_values(long), salun_avg_gap(long)
        floor = "retrain_alt" if "retrain_alt" in values else None
        rows = rank(values, _methods(record), floor)
        floor_row = rank(values, [floor])[0] if floor else None
        lines += [f"**{scenario}**", "",
                  "| model | Avg. Gap (SalUn) | Avg. Gap (per seed) | 95 % CI | ≈ lowest (p) | ≈ floor (p) |",
                  "|---|---|---|---|---|---|"]
        for ref, label in (("retrain_alt", "retrain_alt (noise floor)"), ("original", "original")):
            if ref in values:
                r = rank(values, [ref])[0]
                lines.append(f"| {label} | {_salun_cell(salun, ref)} | {r.mean:.2f} ± {r.std:.2f} | "
                             f"{fmt_ci(r.ci_low, r.ci_high)} | | |")
        lines += [_row(r, f"**{r.model}**" if r.best else r.model, salun) for r in rows]
        lines.append("")
        verdicts.append("- " + verdict(rows, scenario, floor_row, focus="muda"))
    return "\n".join(lines + ["Verdicts, generated from the same numbers:", ""] + verdicts) + "\n"


def excerpt_block(record: dict[str, Any], source: str, best: int = 3) -> str:
    """README's excerpt: per scenario the noise floor, the original, the ``best`` methods of lowest
    mean per-seed Avg. Gap and MUDA, with both Avg. Gap forms (the whole table is in docs/results.md)."""
    lines = [f"From `{source}` ({seeds_text(len(record['seeds']))}, {made_on(record)}); Avg. Gap to the "
             "oracle over UA, RA, TA and MIA-Eff., lower is better; ranked by the per-seed form; the lowest "
             f"{best} methods of each scenario and MUDA (all {len(_methods(record))}: "
             "[Results](docs/results.md)).", "",
             "| scenario | model | rank | Avg. Gap (SalUn) | Avg. Gap (per seed) |", "|---|---|---|---|---|"]
    for scenario in record["scenarios"]:
        long = long_table(record, scenario)
        values, salun = per_seed_values(long), salun_avg_gap(long)
        rows = rank(values, _methods(record), "retrain_alt" if "retrain_alt" in values else None)
        for ref, label in (("retrain_alt", "second oracle (noise floor)"), ("original", "original")):
            if ref in values:
                r = rank(values, [ref])[0]
                lines.append(f"| {scenario} | {label} | | {_salun_cell(salun, ref)} | {r.mean:.2f} ± {r.std:.2f} |")
        for place, r in enumerate(rows, 1):
            if place <= best or r.model == "muda":
                lines.append(f"| {scenario} | {r.model} | {place} of {len(rows)} | {_salun_cell(salun, r.model)} | "
                             f"{r.mean:.2f} ± {r.std:.2f} |")
    return "\n".join(lines) + "\n"


def da_block(record: dict[str, Any], source: str, models: tuple[str, ...] = ("original", "retrain", "muda",
                                                                             "muda_no_da")) -> str:
    """DA of the forget and test features in both forms, seed mean, for a few models."""
    cols = (("DA_frobenius", "DA frobenius, forget"), ("DA_energy", "DA energy, forget"),
            ("DA_test_frobenius", "DA frobenius, test"), ("DA_test_energy", "DA energy, test"))
    lines = [f"From `{source}` (mean over {seeds_text(len(record['seeds']))}):", "",
             "| scenario | model | " + " | ".join(h for _, h in cols) + " |", "|---|---|" + "---|" * len(cols)]
    for scenario in record["scenarios"]:
        long = long_table(record, scenario)
        for model in models:
            sub = long[long["model"] == model]
            if sub.empty:
                continue
            cells = []
            for metric, _ in cols:
                v = sub[sub["metric"] == metric]["value"]
                cells.append(f"{v.mean():.3f}" if len(v) else "–")
            name = "oracle" if model == "retrain" else model
            lines.append(f"| {scenario} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


BACKDOOR_COLUMNS = (("ASR", "ASR"), ("TA", "clean TA"), ("UA", "UA"), ("RA", "RA"), ("MIA", "MIA-Eff."),
                    ("forget_acc_clean", "Acc. D_f (clean)"), ("avg_gap", "Avg. Gap (SalUn)"),
                    ("avg_gap_seed", "Avg. Gap (per seed)"))


def backdoor_block(record: dict[str, Any], source: str) -> str:
    """The backdoor scenario's wide table (ASR beside the Avg. Gap), then the Avg. Gap ranking."""
    scenario = next((s for s in record["scenarios"] if s.startswith("backdoor")), None)
    if scenario is None:
        raise ArtifactError(f"{source}: run {record['run']} has no backdoor scenario for a backdoor block")
    long = long_table(record, scenario)
    salun = salun_avg_gap(long)
    lines = [f"From `{source}` ({seeds_text(len(record['seeds']))}, {made_on(record)}); mean ± std over seeds "
             "(SalUn's Avg. Gap: one value of the seed means):", "",
             "| model | " + " | ".join(h for _, h in BACKDOOR_COLUMNS) + " |",
             "|---|" + "---|" * len(BACKDOOR_COLUMNS)]
    for model in record["models_in_order"]:
        cells = []
        for metric, _ in BACKDOOR_COLUMNS:
            if metric == "avg_gap":
                cells.append(_salun_cell(salun, model))
                continue
            values = {int(r.seed): float(r.value) for r in long[(long["model"] == model)
                                                                 & (long["metric"] == metric)].itertuples()}
            cells.append(_mean_std(values) if values else "–")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n" + avg_gap_block(record, source)


def seeds_block(record: dict[str, Any], source: str) -> str:
    """What more seeds buy: for the first n seeds of the run, the median 95 % CI half-width of the methods'
    Avg. Gap and how many methods the paired test tells apart from the lowest and from the noise floor."""
    seeds = sorted(int(s) for s in record["seeds"])
    lines = [f"From `{source}`: the run's first n seeds, per scenario (methods: {len(_methods(record))}; CI "
             "half-width: median over the methods of the 95 % CI half-width of the mean Avg. Gap per seed).", "",
             "| seeds | scenario | median CI half-width | told apart from the lowest | told apart from the floor |",
             "|---|---|---|---|---|"]
    for n in range(2, len(seeds) + 1):
        keep = set(seeds[:n])
        for scenario in record["scenarios"]:
            values = {m: {s: v for s, v in per.items() if s in keep}
                      for m, per in per_seed_values(long_table(record, scenario)).items()}
            floor = "retrain_alt" if "retrain_alt" in values else None
            rows = rank(values, _methods(record), floor)
            half = [(r.ci_high - r.ci_low) / 2 for r in rows if not math.isnan(r.ci_low)]
            apart = sum(r.tied_with_best is False for r in rows)
            above = sum(r.at_floor is False for r in rows)
            lines.append(f"| {n} | {scenario} | {np.median(half):.2f} | {apart} of {len(rows) - 1} | "
                         f"{above if floor else '–'} of {len(rows)} |")
    seconds = [_seed_seconds(record, s) for s in seeds]
    lines += ["", f"Training and unlearning time per seed (sum of the models' `seconds`, {made_on(record)}): "
              f"{np.mean(seconds) / 60:.1f} min on one core."]
    return "\n".join(lines) + "\n"


def _seed_seconds(record: dict[str, Any], seed: int) -> float:
    """Training and unlearning seconds of one seed: every model once (the shared original is listed in
    each clean scenario's metrics)."""
    seen: dict[str, float] = {}
    for key, entry in record["models"].items():
        parts = key.split("/")
        if len(parts) == 3 and parts[1] == f"seed{seed}" and "metrics" in entry:
            name = "original" if parts[2] == "original" and not parts[0].startswith("backdoor") else key
            seen[name] = float(entry["metrics"].get("seconds") or 0.0)
    return sum(seen.values())


def _methods(record: dict[str, Any]) -> list[str]:
    return [m for m in record["models_in_order"] if m not in REFERENCE_ROWS]


# the measurements file's entry of make bench's ResNet-18 CPU rate, which the cost block turns into hours;
# and two GPU rates for orientation only (not measured: a figure to scale, marked so where shown)
BENCH_ENTRY = "make bench: resnet18 32x32 training on the CPU"
GPU_RATES = (5_000, 20_000)


def _span(low: float, high: float, fmt: str) -> str:
    """``low–high`` in ``fmt``, or one value where both read the same (a single measured run)."""
    a, b = fmt.format(low), fmt.format(high)
    return a if a == b else f"{a}–{b}"


def _hours(images: float, rate: float) -> float:
    return images / rate / 3600


def cost_block(config: dict[str, Any], source: str) -> str:
    """What the profile's DAG costs: its jobs that run a model, the images they push through models
    by stage and kind (``workload.workload_images``, what their sidecars record), and hours at the
    measured CPU rates and at two GPU rates."""
    from .bench import workload_table
    from .workload import data_sizes, workload_images, workload_jobs

    jobs = workload_jobs(config)
    count = {stage: sum(j.stage == stage for j in jobs) for stage in ("original", "oracles", "unlearning", "features")}
    work = workload_images(config)
    total = work["total"]
    n_train, epochs = data_sizes(config).n_train, int(config["train"]["epochs"])
    from ..settings.config import REPO_ROOT
    from .measurements import DEFAULT_FILE, read

    bench = read(REPO_ROOT / DEFAULT_FILE)["entries"][BENCH_ENTRY]
    slow, fast = min(bench["img_s"]), max(bench["img_s"])
    share = {stage: (v["forward_backward"] + v["forward_only"] / 3) / total for stage, v in work["stages"].items()}
    scenarios = ", ".join(config["scenarios"])
    lines = [
        f"`{source}` runs {len(jobs) - count['features']} jobs that push images through a model "
        f"({len(config['seeds'])} seeds × {{{scenarios}}}: {count['original']} originals (per seed the shared "
        f"one, and each backdoor scenario's own), {count['oracles']} oracles and {count['unlearning']} unlearning "
        "runs; each job also extracts its model's features); metrics, tables and figures read their outputs. "
        "Counted exactly from the config (`unlearn_da.tools.bench.workload_images`: the images every job records "
        "in its sidecar as `images`, summed), in millions of images:", "",
        *workload_table(work), "",
        "Forward + backward: passes that record an autograd graph (training and unlearning steps, the DA "
        "term's paired batches, SSD's and SalUn's gradients, Boundary Shrinking's FGSM step); forward only: "
        "validation and probe passes, teachers, feature extraction, counted as a third of a training pass "
        f"in the total of **{total / 1e6:.1f} million**.", "",
        f"Measured with `make bench` (`{DEFAULT_FILE}`: {bench['machine']}; {bench['note']}): ResNet-18 trains "
        f"at {_span(slow, fast, '{:.0f}')} img/s, i.e. "
        f"{_span(n_train / fast, n_train / slow, '{:.0f}')} s per {n_train / 1000:.0f}k-image epoch, "
        f"{_span(_hours(epochs * n_train, fast), _hours(epochs * n_train, slow), '{:.1f}')} h per {epochs}-epoch "
        f"model, **{_span(_hours(total, fast), _hours(total, slow), '{:.0f}')} hours** for the whole table. That is why the "
        "CIFAR profiles are for GPUs.", "",
        f"GPU hours = {total / 1e6:.1f} M / (the GPU's training img/s) / 3600. No GPU was at hand to measure one, so "
        "no measured GPU figure is given here: run `make gpu-check` on the GPU machine, which measures the rate "
        "of each step the table runs (bf16 autocast and channels_last, as the profiles run on CUDA), the jobs' "
        "start-up and tail, and projects the table's hours on that machine and on 8 such GPUs. For orientation only, not measured: a GPU training ResNet-18 at {GPU_RATES[0]:,} img/s "
        f"would need about {_hours(total, GPU_RATES[0]):.1f} hours, at {GPU_RATES[1]:,} img/s about "
        f"{_hours(total, GPU_RATES[1]):.1f} hours. The oracles are {100 * share['oracles']:.0f} % of the cost, "
        f"the originals {100 * share['original']:.0f} %, the unlearning runs {100 * share['unlearning']:.0f} % "
        f"and the feature extraction {100 * share['features']:.0f} %.",
    ]
    return "\n".join(line if line.startswith("|") else _wrap(line) for line in lines) + "\n"


def audit_block(record: dict[str, Any], source: str) -> str:
    """Per scenario, the oracle-ensemble audit's table and its conclusions (``reporting/audit.py``), from
    the shipped record."""
    from ..reporting.audit import table_notes, table_rows

    audits = dict(record.get("audit") or {})
    made = audits.pop("_run", None)
    out = [f"From `{source}` ({made_on(record)})"
           + (f"; its {made['artifacts']} checkpoints and logits files were written over "
              f"{made['first_to_last_s'] / 60:.0f} min, first to last" if made else "") + ".", ""]
    for scenario, audit in audits.items():
        header, body = table_rows(audit["rows"], audit["null"], audit["klom_saturation"], audit["fpr"])
        out += [f"**{scenario}**: " + " ".join(table_notes(audit)), "",
                "| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|",
                *("| " + " | ".join(r) + " |" for r in body), "",
                *(_wrap(f"- {c}") for c in audit["conclusions"]), ""]
    return "\n".join(out)


def audit_cost_block(config: dict[str, Any], source: str) -> str:
    """The audit's jobs and images for a profile, counted from its config (``workload.audit_jobs``)."""
    from .bench import workload_table
    from .workload import audit_jobs, data_sizes, workload_images

    jobs = audit_jobs(config, data_sizes(config))
    work = workload_images(config)
    total = work["total"]
    a = config["audit"]
    count = {stage: sum(j.stage == stage for j in jobs)
             for stage in ("original", "oracles", "unlearning", "audit_logits", "features")}
    lines = [
        f"`--configfile {source}` with K = {a['train_seeds']} and {len(a['methods'])} methods ({', '.join(a['methods'])}) on "
        f"{{{', '.join(a['scenarios'])}}}: {count['original']} originals (each job also extracts its model's "
        f"features), {count['oracles']} oracles, {count['unlearning']} unlearning runs and {count['audit_logits']} "
        f"logits jobs, {len(jobs) - count['features']} jobs that run a model, counted from the config "
        "(`unlearn_da.tools.workload.audit_jobs`), in millions of images:", "",
        *workload_table(work), "",
        (f"At a training rate of R img/s that is {total / 1e6:.1f} M / R / 3600 hours; for orientation only, "
         f"not measured: {_hours(total, GPU_RATES[0]):.1f} h at {GPU_RATES[0]:,} img/s, "
         f"{_hours(total, GPU_RATES[1]):.1f} h at {GPU_RATES[1]:,} img/s. " if config["arch"] == "resnet18" else "")
        + f"The images grow linearly in K; the oracles are "
        f"{100 * (work['stages']['oracles']['forward_backward'] + work['stages']['oracles']['forward_only'] / 3) / total:.0f} % "
        "of them (two ensembles of K).",
    ]
    return "\n".join(line if line.startswith("|") else _wrap(line) for line in lines) + "\n"


def klom_floor_block(config: dict[str, Any], source: str) -> str:
    """KLoM's floor against K (``metrics/klom.py`` on simulated margins): why the audit's K matters."""
    from ..metrics.klom import klom

    rng = np.random.default_rng(0)
    ks = sorted({4, 16, 32, 64, 100, int(config["audit"]["train_seeds"])})
    k = config["audit"]["klom"]
    lines = ["| K | oracles vs oracles: median | 95th percentile | shifted by 1 sd: median | by 3 sd: median |",
             "|---|---|---|---|---|"]
    for n in ks:
        a, b = rng.normal(size=(n, 2000)), rng.normal(size=(n, 2000))
        kw = {"bins": int(k["bins"]), "eps": float(k["eps"]), "clip": float(k["range"])}
        null = klom(a, b, **kw)
        one, three = klom(rng.normal(1.0, size=(n, 2000)), b, **kw), klom(rng.normal(3.0, size=(n, 2000)), b, **kw)
        lines.append(f"| {n} | {np.median(null):.2f} | {np.percentile(null, 95):.2f} | {np.median(one):.2f} | "
                     f"{np.median(three):.2f} |")
    return (_wrap(f"KLoM (nats) of K margins against K margins, per example over 2,000 simulated examples drawn "
                  f"from a standard normal (seed 0), with the binning of `{source}`; the audit's K is "
                  f"{config['audit']['train_seeds']}:") + "\n\n" + "\n".join(lines) + "\n")


def tuned_block(config: dict[str, Any], source: str) -> str:
    """Every tuned value of a profile, the kept search that chose it and the code it was searched with
    (``tuning.selection``, ``tuning.da_energy``; tests/test_profiles.py checks them against today's)."""
    import json

    from ..settings.config import REPO_ROOT

    sel_path, energy_path = config["tuning"].get("selection"), config["tuning"].get("da_energy")
    if not sel_path:
        return f"`{source}` names no search (`tuning.selection: null`): none of its values is tuned.\n"
    selection = json.loads((REPO_ROOT / sel_path).read_text())
    search = selection["search"]
    lines = [_wrap(f"`{source}`: chosen by `{sel_path}` (budget {search['budget']} per method, "
                   f"{search['widen']} of them in round 2; search seed {search['seed']}; tuning seeds "
                   f"{', '.join(map(str, search['seeds']))}; scenarios {', '.join(search['scenarios'])}; "
                   f"DA weights tried {', '.join(map(str, search['da_weights']))}). Score: mean |candidate − oracle| "
                   "over UA, RA, validation accuracy and MIA-Efficacy; code: the hashes of the method's own "
                   "files, of the shared training code and of the scoring code it was searched with."), "",
             "| method | tuned values | score | tried | code (method / training / scoring) |",
             "|---|---|---|---|---|"]
    for method, entry in sorted(selection["chosen"].items()):
        code = selection["code"][method]
        values = ", ".join(f"{k} {v}" for k, v in entry["values"].items()
                           if not method.endswith("+da") or k == "da_weight")
        lines.append(f"| {method} | {values} | {entry['score']:.3f} | {entry['tried']} | "
                     f"`{code['method'][:8]}` / `{code['training'][:8]}` / `{code['scoring'][:8]}` |")
    if energy_path:
        energy = json.loads((REPO_ROOT / energy_path).read_text())
        lines += ["", _wrap(f"`evaluation.da.energy` {energy['chosen_energy']}: chosen by `{energy_path}` "
                            f"(`make da-energy`, tuning seeds {', '.join(map(str, energy['search']['seeds']))}, "
                            "training features only; code: training "
                            f"`{energy['code']['training'][:8]}`, choice `{energy['code']['choice'][:8]}`).")]
    return "\n".join(lines) + "\n"


def _wrap(paragraph: str, width: int = 100) -> str:
    """A prose paragraph in lines of at most ``width`` characters (words and code spans kept whole)."""
    import textwrap

    return textwrap.fill(paragraph, width, break_long_words=False, break_on_hyphens=False)


GENERATORS: dict[str, tuple[str, Callable[[dict[str, Any], str], str]]] = {
    "digits-excerpt": ("expected/digits-smallcnn.json", excerpt_block),
    "digits-seeds": ("expected/digits-smallcnn.json", seeds_block),
    "digits-avg-gap": ("expected/digits-smallcnn.json", avg_gap_block),
    "digits-da": ("expected/digits-smallcnn.json", da_block),
    "digits-backdoor": ("expected/digits-smallcnn-backdoor.json", backdoor_block),
    "fashion-avg-gap": ("expected/fashion_mnist-smallcnn.json", avg_gap_block),
    "fashion-da": ("expected/fashion_mnist-smallcnn.json", da_block),
    "fashion-backdoor": ("expected/fashion_mnist-smallcnn-backdoor.json", backdoor_block),
    "digits-audit": ("expected/digits-smallcnn-audit.json", audit_block),
}
# blocks made from a config profile (over the project's config/config.yaml), not from expected results
CONFIG_GENERATORS: dict[str, tuple[str, Callable[[dict[str, Any], str], str]]] = {
    "cifar10-cost": ("config/cifar10.yaml", cost_block),
    "cifar10-audit-cost": ("config/cifar10.yaml config/audit.yaml", audit_cost_block),
    "digits-audit-cost": ("config/audit.yaml", audit_cost_block),
    "klom-floor": ("config/audit.yaml", klom_floor_block),
    "digits-tuned": ("config/config.yaml", tuned_block),
    "fashion-tuned": ("config/fashion-mnist.yaml", tuned_block),
}


def _measured(entry: dict[str, Any]) -> str:
    """``9 min 31 s on AMD EPYC, 2 cores (2026-12-07, commit abc1234; a note)``: one measured time."""
    from .measurements import duration

    when = ", ".join(x for x in (entry.get("date"), f"commit `{entry['commit']}`" if entry.get("commit") else None) if x)
    extra = "; ".join(x for x in (when, entry.get("note")) if x)
    return f"{duration(entry['seconds'])} on {entry['machine']}" + (f" ({extra})" if extra else "")


def experiments_block(measured: dict[str, Any], source: str) -> str:
    """What each DVC experiment mode reran and took on the default run (``tools/dvc_experiments.py``)."""
    from .measurements import duration

    record = measured["entries"]["dvc-experiments"]
    names = {"temp": "`--temp`", "queue": f"queued sweep, `-j {record['queue_jobs']}`", "workspace": "workspace"}
    lines = [_wrap(f"Measured by `python -m unlearn_da dvc-experiments` (`{source}`) on {record['machine']}, "
                   f"{record['date']}, commit `{record['commit']}`, in a clone after `make reproduce`: each "
                   f"experiment sets `{record['key']}`; the queued ones ran with `CORES="
                   f"{record['cores_per_experiment']}` each."), "",
             "| mode | command | jobs each experiment ran | wall time | `git diff --stat config/` |",
             "|---|---|---|---|---|"]
    for m in record["modes"]:
        lines.append(f"| {names.get(m['mode'], m['mode'])} | `{m['command']}` | {', '.join(map(str, m['jobs']))} | "
                     f"{duration(m['seconds'])} | {'empty' if not m['config_diff'] else m['config_diff']} |")
    shown = record["exp_show_only_changed"].splitlines()
    if shown:  # DVC names a column <metrics file>:<key>; here <scenario> <key>, and no padding
        header = re.sub(r"results/[^/|]+/([^/|]+)/headline\.json:", r"\1 ", shown[0])
        shown = ["| " + " | ".join(c.strip() for c in row.strip().strip("|").split("|")) + " |"
                 for row in [header, *shown[1:]]]
        shown[1] = "|" + "---|" * (shown[0].count("|") - 1)
    lines += ["", _wrap("`dvc exp show --only-changed --md` afterwards (a column "
                        "`results/<run>/<scenario>/headline.json:<key>` is shown as `<scenario> <key>`):"), "", *shown]
    return "\n".join(lines) + "\n"


def quick_start_block(measured: dict[str, Any], source: str) -> str:
    """README's Quick start times: ``make reproduce`` from a fresh clone and ``make test``, one each."""
    entries = measured["entries"]
    lines = []
    run = entries.get("make reproduce")
    if run:
        lines.append(f"`make reproduce` ({run.get('jobs', '?')} jobs): {_measured(run)}.")
    test = entries.get("make test")
    if test:
        lines.append(f"`make test` ({test.get('passed', '?')} tests passed"
                     + (f", {test['skipped']} skipped: they need qemu or a GPU" if test.get("skipped") else "")
                     + f"): {_measured(test)}.")
    lines.append(f"(`{source}`, written by `python -m unlearn_da measure -- <command>`.)")
    return _wrap(" ".join(lines)) + "\n"


#: the profiles of config/README.md's table of measured times, each with the command that runs it
PROFILE_RUNS = (
    ("config/config.yaml", "make reproduce", ""),
    ("config/quick.yaml", "make reproduce PROFILE=config/quick.yaml", "config/quick.yaml"),
    ("config/backdoor.yaml", "make reproduce PROFILE=config/backdoor.yaml", "config/backdoor.yaml"),
    ("config/fashion-mnist.yaml", "make reproduce PROFILE=config/fashion-mnist.yaml", "config/fashion-mnist.yaml"),
    ("config/cifar10.yaml", "make reproduce PROFILE=config/cifar10.yaml", "config/cifar10.yaml"),
    ("config/cifar10.yaml config/cifar100.yaml", "make reproduce PROFILE=\"config/cifar10.yaml config/cifar100.yaml\"",
     "config/cifar10.yaml config/cifar100.yaml"),
    ("make smoke-paper, CIFAR-10", "python -m unlearn_da smoke-paper --datasets cifar10", ""),
    ("make smoke-paper, CIFAR-100", "python -m unlearn_da smoke-paper --datasets cifar100", ""),
)


def profiles_block(measured: dict[str, Any], source: str) -> str:
    """Each profile's jobs that train or unlearn a model (``workload.workload_jobs``, from its config) and
    its measured wall time, where one is in the measurements file."""
    from ..settings.config import REPO_ROOT, load_config
    from .workload import workload_jobs

    lines = ["| profile | jobs that train or unlearn a model | measured wall time |", "|---|---|---|"]
    for label, command, files in PROFILE_RUNS:
        jobs = "–"
        if label.startswith("config/"):
            config = load_config([REPO_ROOT / f for f in files.split()])
            jobs = str(sum(j.stage != "features" for j in workload_jobs(config)))
        entry = measured["entries"].get(command)
        lines.append(f"| `{label}` | {jobs} | {_measured(entry) if entry else 'not measured'} |")
    return "\n".join(lines) + "\n\n" + _wrap(
        f"Wall times from `{source}` (`python -m unlearn_da measure -- <command>` writes them); a time "
        "measured with an earlier DAG says so.") + "\n"


# blocks made from the measurements the project ships (a command wrote each on a named machine)
MEASUREMENT_GENERATORS: dict[str, tuple[str, Callable[[dict[str, Any], str], str]]] = {
    "dvc-experiments": ("measurements/measurements.json", experiments_block),
    "quick-start": ("measurements/measurements.json", quick_start_block),
    "profile-times": ("measurements/measurements.json", profiles_block),
}


def _muda_standing(record: dict[str, Any], scenario: str) -> tuple[int, int, str, bool | None]:
    """MUDA's place among the run's methods by mean per-seed Avg. Gap, their count, the best method,
    and whether MUDA can be told apart from the best (paired test; None: too few seeds)."""
    long = long_table(record, scenario)
    rows = rank(per_seed_values(long), _methods(record))
    place = next(i for i, r in enumerate(rows, 1) if r.model == "muda")
    return place, len(rows), rows[0].model, rows[place - 1].tied_with_best


def headline_block(records: dict[str, dict[str, Any]], source: str) -> str:
    """README's first sentence: where MUDA stands against the baselines in the CPU profiles' shipped
    results, and that the paper's CIFAR tables have not been run (they need a GPU)."""
    parts, tied_everywhere, first_everywhere = [], True, True
    for record in records.values():
        places = []
        for scenario in record["scenarios"]:
            place, total, best, tied = _muda_standing(record, scenario)
            first_everywhere &= place == 1
            tied_everywhere &= bool(tied)
            places.append(f"{place} of {total} on {scenario} (closest: {best.replace('_', ' ')})"
                          if place > 1 else f"first of {total} on {scenario}")
        parts.append(f"{record['run']} ({seeds_text(len(record['seeds']))}): " + ", ".join(places))
    if first_everywhere:
        verdict_text = "MUDA comes closest to the retrained oracle in every scenario"
    elif tied_everywhere:
        verdict_text = ("MUDA is not the closest to the retrained oracle, though in no scenario do these seeds "
                        f"tell it apart from the closest method ({TEST_NAME})")
    else:
        verdict_text = "MUDA does not come closest to the retrained oracle"
    return _wrap(f"**What the shipped results say:** on the CPU profiles {verdict_text}; by Avg. Gap to the oracle "
                 f"it ranks {'; '.join(parts)}. The paper's CIFAR-10 and CIFAR-100 tables need a GPU and have not "
                 f"been run. (Generated from `{'`, `'.join(records)}`.)") + "\n"


#: blocks made from several shipped expected-results files at once
SUMMARY_GENERATORS: dict[str, tuple[str, Callable[[dict[str, Any], str], str]]] = {
    "headline": ("expected/digits-smallcnn.json expected/fashion_mnist-smallcnn.json", headline_block),
}


def _file_block(language: str) -> Callable[[dict[str, Any], str], str]:
    """A shipped file shown whole in a fenced block (the page cannot drift from the file the tests run)."""
    def make(record: dict[str, Any], source: str) -> str:
        return f"```{language}\n# {source}\n{record['text'].rstrip()}\n```\n"

    return make


def method_api_block(_record: dict[str, Any], source: str) -> str:
    """The method API of ``methods/api.py`` as tables: what a method's ``run`` and ``images`` may use."""
    from ..methods import api

    def table(title: str, rows: dict[str, tuple[str, str]], prefix: str) -> list[str]:
        out = [f"| {title} | what it does |", "|---|---|"]
        return out + [f"| `{prefix}{name}({params})` | {what} |" for name, (params, what) in rows.items()]

    def attributes(rows: dict[str, str], prefix: str) -> list[str]:
        return ["| attribute | what it holds |", "|---|---|"] + [f"| `{prefix}{k}` | {v} |" for k, v in rows.items()]

    lines = [f"API version **{api.API_VERSION}** (`API_VERSION = {api.API_VERSION}` in a method's file).", "",
             "### `ctx`: the `UnlearnContext` a method's `run(ctx, hp)` receives", "",
             *attributes(api.CONTEXT_ATTRIBUTES, "ctx."), "", *table("method", api.CONTEXT_METHODS, "ctx."), "",
             "### Helpers in `unlearn_da.methods.base`", "", *table("function", api.BASE_HELPERS, ""), "",
             "### `count`: what a method's `images(count)` receives (`unlearn_da.methods.counting.Count`)", "",
             *attributes(api.COUNT_ATTRIBUTES, "count."), "", *table("method", api.COUNT_API, "count."), "",
             f"(Generated from `{source}`.)"]
    return "\n".join(lines) + "\n"


#: blocks that show a shipped file whole (the example of docs/own-method.md) or what it declares
FILE_GENERATORS: dict[str, tuple[str, Callable[[dict[str, Any], str], str]]] = {
    "own-method-file": ("examples/own-method/forget_penalty.py", _file_block("python")),
    "own-method-overlay": ("examples/own-method/overlay.yaml", _file_block("yaml")),
    "method-api": ("src/unlearn_da/methods/api.py", method_api_block),
}


def _load(root: Path, name: str) -> dict[str, Any]:
    """The input of block ``name``: a config profile, a measurement, a shipped file, or the expected results
    of a run."""
    if name in FILE_GENERATORS:
        return {"text": (root / FILE_GENERATORS[name][0]).read_text(encoding="utf-8")}
    if name in SUMMARY_GENERATORS:
        return {f: load_expected(root / f) for f in SUMMARY_GENERATORS[name][0].split()}
    if name in MEASUREMENT_GENERATORS:
        return json.loads((root / MEASUREMENT_GENERATORS[name][0]).read_text(encoding="utf-8"))
    if name in CONFIG_GENERATORS:
        from ..settings.config import load_config

        return load_config([root / f for f in CONFIG_GENERATORS[name][0].split()], base=root / "config" / "config.yaml")
    return load_expected(root / GENERATORS[name][0])


# figures drawn from the shipped results for README and docs/: path -> expected file
FIGURES: dict[str, str] = {
    "docs/img/digits-avg-gap.png": "expected/digits-smallcnn.json",
}


def stale_note(root: Path, record: dict[str, Any], source: str) -> str:
    """A line for a block of expected results made with another config than its profile gives today
    (``config_sha256``): the numbers are shown, and said not to be today's; "" when they are."""
    from .reproduction import config_digest
    from ..settings.config import load_config

    recorded, overlays = record.get("config_sha256"), record.get("overlays")
    if not recorded or overlays is None:
        return ""
    now = config_digest(load_config([root / o for o in overlays], base=root / "config" / "config.yaml"))
    if now == recorded:
        return ""
    profile = " ".join(overlays) or "config/config.yaml"
    return _wrap(f"**Not today's numbers**: `{source}` was made with an earlier config of this profile "
                 f"(config `{recorded[:8]}`; `{profile}` gives `{now[:8]}` today, e.g. after a re-tune). "
                 "`make reproduce` and `make expected-results` with the profile re-make them.") + "\n\n"


def render(readme: str, root: Path, name: str = "README.md") -> str:
    """``readme`` with every generated block rewritten; an unknown block name is an error."""
    cache: dict[str, dict[str, Any]] = {}
    known = {**GENERATORS, **CONFIG_GENERATORS, **MEASUREMENT_GENERATORS, **SUMMARY_GENERATORS, **FILE_GENERATORS}

    def body(match: re.Match) -> str:
        block = match.group("name")
        if block not in known:
            raise ArtifactError(f"{name}: unknown generated block '{block}'; known: {', '.join(known)}")
        source, make = known[block]
        if source not in cache:
            cache[source] = _load(root, block)
        note = stale_note(root, cache[source], source) if block in GENERATORS else ""
        return match.group(1) + note + make(cache[source], source) + match.group(4)

    return BLOCK.sub(body, readme)


def pages(root: Path) -> list[Path]:
    """The files that may hold generated blocks: README.md, config/README.md and every page of docs/."""
    return [root / "README.md", root / "config" / "README.md", *sorted((root / "docs").glob("**/*.md"))]


def draw_figure(root: Path, target: str) -> None:
    """One of ``FIGURES``: README's figure of a run (``readme_figure``), drawn from its shipped expected results."""
    from ..core.artifacts import atomic_path
    from ..reporting.plots import _setup
    from .readme_figure import DPI, avg_gap_figure

    plt, _ = _setup()
    fig = avg_gap_figure(load_expected(root / FIGURES[target]))
    path = root / target
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, metadata={"Software": None})
    plt.close(fig)


def run_readme_tables(root: str | Path = ".", check: bool = False) -> tuple[int, str]:
    """(exit code, message): rewrite the generated blocks of README.md and docs/*.md (and draw the
    figures of ``FIGURES``), or with ``check`` say whether they are what the shipped expected results give."""
    root = Path(root)
    texts = {path: path.read_text(encoding="utf-8") for path in pages(root) if path.exists()}
    new = {path: render(text, root, str(path.relative_to(root))) for path, text in texts.items()}
    if check:
        present = {m.group("name") for text in texts.values() for m in BLOCK.finditer(text)}
        every = {**GENERATORS, **CONFIG_GENERATORS, **MEASUREMENT_GENERATORS, **SUMMARY_GENERATORS, **FILE_GENERATORS}
        unshown = [n for n, (source, _) in every.items()
                   if all((root / f).exists() for f in source.split()) and n not in present]
        if unshown:
            return 1, f"README.md, docs/: no generated block for {', '.join(unshown)}, whose inputs are shipped"
        missing = [target for target in FIGURES if not (root / target).exists()]
        if missing:
            return 1, f"{', '.join(missing)} missing; run `make readme-tables`"
        changed = [path for path in texts if new[path] != texts[path]]
        if not changed:
            return 0, "README.md, docs/: every generated block matches the expected results"
        diff = "".join("".join(difflib.unified_diff(texts[p].splitlines(True), new[p].splitlines(True),
                                                    str(p.relative_to(root)), "generated", n=1)) for p in changed)
        names = ", ".join(str(p.relative_to(root)) for p in changed)
        return 1, f"{names}: generated blocks differ from the expected results; run `make readme-tables`\n{diff}"
    from ..core.artifacts import write_text

    written = [path for path in texts if new[path] != texts[path]]
    for path in written:
        write_text(path, new[path], encoding="utf-8")
    for target in FIGURES:
        draw_figure(root, target)
    names = ", ".join(str(p.relative_to(root)) for p in written) or "no page"
    return 0, f"generated blocks rewritten in {names}; figures drawn: {', '.join(FIGURES)}"
