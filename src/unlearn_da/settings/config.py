"""Load, merge and validate pipeline configs with errors a user can act on.

The Snakefile and the CLI both call :func:`validate_config`, so a bad value is
refused the same way everywhere, naming the file, the key, the bad value and
what is allowed. Nothing here imports torch: the Snakefile runs this on every
DAG build.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import re
from pathlib import Path
from typing import Any
from collections.abc import Iterable, Sequence

from .config_yaml import load_yaml_file
from ..data.datasets import DATASETS
from ..core.errors import ConfigError, short
from ..methods import NO_DA_PLUGIN, method_base
from ..core.scenarios import parse_scenario
from .search import KINDS, parse_range

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_CONFIG = REPO_ROOT / "config" / "config.yaml"
DEFAULT_SCHEMA = REPO_ROOT / "workflow" / "schemas" / "config.schema.yaml"



def deep_merge(base: dict, overlay: dict) -> dict:
    """Return ``base`` updated recursively with ``overlay`` (Snakemake's merge rule)."""
    merged = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def read_yaml(path: str | Path) -> dict:
    """A config file's mapping, read as data only (``config_yaml``: no duplicate keys, no alias
    bombs, no YAML 1.1 surprises)."""
    p = Path(path)
    data = load_yaml_file(p)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping of keys, got {type(data).__name__}")
    if "__use_yte__" in data:
        raise ConfigError(f"{p}: key '__use_yte__' asks Snakemake to evaluate the file as a YTE template, "
                          "that is, to run the Python in it; a config of this project is plain data: remove "
                          "the key and write the values out")
    return data


def load_config(
    configfiles: Sequence[str | Path] = (),
    overrides: dict | None = None,
    base: str | Path | None = DEFAULT_CONFIG,
) -> dict:
    """The config Snakemake would build: ``base``, then each configfile, then overrides."""
    config: dict = read_yaml(base) if base is not None else {}
    for path in configfiles:
        config = deep_merge(config, read_yaml(path))
    if overrides:
        config = deep_merge(config, overrides)
    return config


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_+-]{1,80}")


def _format_path(path: Iterable[Any]) -> str:
    """``a.b[0].c``; a key that is not a plain name is quoted and escaped (``repr``, cut), so a newline or
    a terminal escape in a user's key cannot break or forge the message."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        text = str(part) if _PLAIN_KEY.fullmatch(str(part)) else short(str(part), 80)
        out += f".{text}" if out else text
    return out or "<top level>"


class _Sources(list):
    """The config files of a run, in merge order, parsed once, with the merged config they gave.

    A key's source is the last file that sets it, unless the merged value differs from that
    file's: then it came from the command line (``--config key=value``).
    """

    def __init__(self, sources: Sequence[str | Path], config: dict | None = None) -> None:
        super().__init__(sources)
        self.config = config
        # a file that exists but does not parse is refused under its own name; one that does not
        # exist (a caller's label) sets nothing
        self.parsed = [read_yaml(src) if Path(src).exists() else None for src in sources]


def _lookup(node: Any, key_path: Sequence[Any]) -> tuple[bool, Any]:
    for part in key_path:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            return False, None
    return True, node


def _source_of(key_path: Sequence[Any], sources: _Sources) -> str | None:
    """The config file whose value of ``key_path`` won, or None where the command line set it."""
    found, value = None, None
    for src, doc in zip(sources, sources.parsed, strict=True):
        if doc is None:
            continue
        ok, node = _lookup(doc, key_path)
        if ok:
            found, value = str(src), node
    if found is not None and sources.config is not None and not isinstance(value, dict):
        ok, merged = _lookup(sources.config, key_path)
        if ok and merged != value:
            return None
    return found


def _properties_of(subschema: dict, root: dict) -> set[str]:
    """Keys a (possibly $ref-composed) object schema allows."""
    keys = set(subschema.get("properties", {}))
    ref = subschema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        keys |= _properties_of(root["$defs"][ref.split("/")[-1]], root)
    return keys


def _describe_error(err: Any, root: dict) -> str:
    """Turn one jsonschema error into 'what is wrong, what is allowed'."""
    validator = err.validator
    value = err.validator_value
    if validator == "enum":
        return f"{short(err.instance)} is not allowed; allowed: {', '.join(map(str, value))}"
    if validator == "type":
        expected = value if isinstance(value, str) else " or ".join(value)
        return f"{short(err.instance)} has the wrong type; expected {expected}"
    if validator in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        op = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}
        return f"{short(err.instance)} is out of range; must be {op[validator]} {value}"
    if validator in ("additionalProperties", "unevaluatedProperties"):
        allowed = sorted(_properties_of(err.schema, root))
        extra = re.findall(r"'([^']+)'", err.message)
        return (
            f"unknown key(s) {', '.join(extra) or err.message}; allowed keys: {', '.join(allowed)}"
        )
    if validator == "pattern":
        return f"{short(err.instance)} does not match the expected form {value!r}"
    if validator == "minItems":
        return f"{short(err.instance)} has fewer than {value} item(s)"
    if validator == "maxItems":
        return f"{short(err.instance)} has more than {value} item(s)"
    if validator == "uniqueItems":
        return f"{short(err.instance)} repeats an item; every item must be unique"
    if validator == "maxLength":
        return f"{short(err.instance)} is longer than {value} characters"
    return short(err.message, 300)


def load_schema(schema_path: str | Path = DEFAULT_SCHEMA) -> dict:
    return read_yaml(schema_path)


def validate_config(
    config: dict,
    schema_path: str | Path = DEFAULT_SCHEMA,
    sources: Sequence[str | Path] = (str(DEFAULT_CONFIG),),
) -> dict:
    """Validate ``config`` against the schema and the cross-key rules; raise one ConfigError listing every problem."""
    import jsonschema

    # every file is read with the strict loader first: a duplicate key, an alias bomb or a YAML 1.1
    # surprise is refused naming its own file (Snakemake's loader lets all three through)
    sources = _Sources(sources, config)
    # a method of unlearn.external brings its own hyper-parameter block (methods/external.py)
    schema, external_problems = schema_with_external(config, load_schema(schema_path), sources)
    validator = _strict_validator(jsonschema, schema)
    problems: list[str] = external_problems + [_problem(path, f"{short(value)} is not a finite number; NaN and infinity are not allowed",
                                    sources) for path, value in _non_finite(config)]
    problems += [_problem(path, f"{short(value)} holds a control character (a newline, tab, ...); names, paths "
                          "and values may not", sources) for path, value in _control_characters(config)]
    for err in sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path))):
        # report the most specific sub-error for oneOf/anyOf
        if err.context:
            err = min(err.context, key=lambda e: -len(e.absolute_path))
        path = list(err.absolute_path)
        source_path = path
        if err.validator in ("additionalProperties", "unevaluatedProperties") and isinstance(err.instance, dict):
            extra = sorted(map(str, set(err.instance) - _properties_of(err.schema, schema)))
            source_path = path + extra[:1]  # the file that added the unknown key, not its parent's
        problems.append(_problem(path, _describe_error(err, schema), sources, source_path))
    if not problems:
        problems.extend(_semantic_problems(config, schema, sources))
    if problems:
        raise ConfigError(
            "invalid configuration:\n  - " + "\n  - ".join(problems)
        )
    return config


# names a method of unlearn.external may not take: the built-ins', the oracles' and the unlearn block's keys
RESERVED_NAMES = frozenset({"original", "retrain", "retrain_alt", "da", "methods", "variants", "external",
                            "log_every", "probe_size"})


def schema_with_external(config: dict, schema: dict, sources: Sequence[str | Path] = ()) -> tuple[dict, list[str]]:
    """The schema with a block ``unlearn.<name>`` (``x-method``) per method of ``unlearn.external``, from the
    ``HYPERPARAMETERS`` its source declares, and the problems of the declared methods: a name taken by a
    built-in, a source that cannot be read or imported, a declared schema that is no schema."""
    import jsonschema

    from ..methods import METHOD_MODULES
    from ..methods.external import MethodSourceError, external_methods

    found = external_methods(config)
    if not found:
        return schema, []
    sources = sources if isinstance(sources, _Sources) else _Sources(sources)
    schema = copy.deepcopy(schema)
    blocks = schema["properties"]["unlearn"]["properties"]
    problems = []
    for name, method in found.items():
        where = ["unlearn", "external", name]
        if name in METHOD_MODULES or name in RESERVED_NAMES:
            taken = "a built-in method" if name in METHOD_MODULES else "a key of the unlearn block"
            problems.append(_problem(where, f"the name {name!r} is taken by {taken}; choose another", sources))
            continue
        where = where + [next(iter(config["unlearn"]["external"][name]))]
        if isinstance(method, MethodSourceError):
            problems.append(_problem(where, str(method), sources))
            continue
        bad_ref = _foreign_ref(method.hyperparameters, schema)
        try:
            jsonschema.Draft202012Validator.check_schema(method.hyperparameters)
        except jsonschema.SchemaError as exc:
            bad_ref = f"is not a valid JSON schema: {short(exc.message, 200)}"
        if bad_ref:
            problems.append(_problem(where, f"its HYPERPARAMETERS {bad_ref}", sources))
            continue
        blocks[name] = {**method.hyperparameters, "x-method": True, "x-external": True,
                        "description": method.description, **({"x-no-da": True} if method.da_plugin else {})}
    return schema, problems


def _foreign_ref(node: Any, schema: dict) -> str | None:
    """A ``$ref`` of a declared schema that does not point to a block of this schema's ``$defs``."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if ref is not None and not (isinstance(ref, str) and ref.startswith("#/$defs/")
                                    and ref.rsplit("/", 1)[-1] in schema.get("$defs", {})):
            return (f"refers to {short(ref)}; a method's schema may refer to "
                    f"{', '.join('#/$defs/' + k for k in schema.get('$defs', {}))} only")
        return next((r for r in map(lambda v: _foreign_ref(v, schema), node.values()) if r), None)
    if isinstance(node, list):
        return next((r for r in map(lambda v: _foreign_ref(v, schema), node) if r), None)
    return None


def da_plugin_refusal(config: dict, base: str) -> str | None:
    """Why method ``base`` cannot run as ``+da`` (None when it can): a built-in's reason, or the
    ``DA_PLUGIN`` sentence a method of ``unlearn.external`` declares."""
    from ..methods.external import ExternalMethod, external_methods

    if base in NO_DA_PLUGIN:
        return NO_DA_PLUGIN[base]
    method = external_methods(config).get(base)
    return method.da_plugin if isinstance(method, ExternalMethod) else None


def _strict_validator(jsonschema: Any, schema: dict) -> Any:
    """Draft 2020-12, except that ``integer`` is an int only: JSON Schema counts 0.0 as an integer,
    and a seed or a count of 0.0 breaks a path or a range() later."""
    base = jsonschema.Draft202012Validator
    checker = base.TYPE_CHECKER.redefine(
        "integer", lambda _checker, value: isinstance(value, int) and not isinstance(value, bool))
    return jsonschema.validators.extend(base, type_checker=checker)(schema)


def _control_characters(node: Any, path: tuple = ()) -> Iterable[tuple[tuple, str]]:
    """Every key or string in ``node`` with a control character: a newline in a name passes a schema
    pattern's ``$`` and then splits a rule's shell command or a path."""
    def bad(text: str) -> bool:
        return any(ord(ch) < 32 or ord(ch) == 127 for ch in text)

    if isinstance(node, str):
        if bad(node):
            yield path, node
    elif isinstance(node, dict):
        for key, value in node.items():
            if isinstance(key, str) and bad(key):
                yield path + (key,), key
            else:
                yield from _control_characters(value, path + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _control_characters(value, path + (i,))


def _name_list_problems(config: dict, known: Sequence[str], variants: dict, sources: Sequence[str | Path]) -> list[str]:
    """Free-form lists of method names take known names only: a misspelt ``unlearn.da.weights`` key would
    leave its ``+da`` variant at the default weight, a misspelt figure model would be skipped silently."""
    problems = []
    pluggable = sorted(m for m in known if da_plugin_refusal(config, m) is None)
    for key in (config["unlearn"].get("da") or {}).get("weights") or {}:
        if key not in pluggable:
            problems.append(_problem(["unlearn", "da", "weights", key], f"{short(key, 80)} is not a method that takes "
                                     f"the DA plug-in; allowed: {', '.join(pluggable)}", sources))
    names = set(known) | set(variants)
    for block in ("embedding", "da_k_curve"):
        for i, model in enumerate((config["evaluation"].get(block) or {}).get("models") or []):
            if method_base(str(model))[0] not in names:
                problems.append(_problem(["evaluation", block, "models", i], f"unknown method {short(model, 80)}; "
                                         f"allowed: {', '.join(sorted(names))} (each optionally with +da)", sources))
    return problems


def _non_finite(node: Any, path: tuple = ()) -> Iterable[tuple[tuple, float]]:
    """Every float in ``node`` that is NaN or infinite, with its key path (JSON schema's
    ``type: number`` and ``minimum`` both let NaN through)."""
    if isinstance(node, float) and not math.isfinite(node):
        yield path, node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _non_finite(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _non_finite(value, (*path, i))


def _fit_size(config: dict, info) -> int:
    """Training images left after the test (data sets without one) and validation splits, as
    ``data.prepare`` draws them: per class, ``round(fraction * count)`` is held out."""
    data = config["data"]
    vf = float(data["val_fraction"])
    subset = data.get("subset")
    if subset:
        per_class = [int(subset["train"]) // info.num_classes] * info.num_classes
    else:
        per_class = list(info.train_counts)
        if not info.has_test_split:
            per_class = [n - int(round(float(data["test_fraction"]) * n)) for n in per_class]
    return sum(n - int(round(vf * n)) for n in per_class)


def _subset_problems(config: dict, sources: Sequence[str | Path]) -> list[str]:
    """A ``data.subset`` too small for the metrics, or a forget set smaller than the k-means
    cluster count, refused before anything runs.

    Every class needs a test sample, a validation sample and a training sample (the split is
    stratified), and k-means on a random (or backdoor) forget set uses k = number of classes, so
    that forget set needs at least that many samples, with or without ``data.subset``.
    """
    subset = config["data"].get("subset")
    info = DATASETS[config["dataset"]]
    c = info.num_classes
    vf = float(config["data"]["val_fraction"])
    out = []
    if subset:
        n_train, n_test = int(subset["train"]), int(subset["test"])
        if n_test < c:
            out.append(_problem(["data", "subset", "test"], f"{n_test} test images cannot hold every one of the "
                                f"{c} classes of {info.name}; use at least {c}", sources))
        per_class = n_train // c
        val = int(round(vf * per_class))
        if val < 1 or per_class - val < 1:
            need = next(n for n in range(c, 100 * c + 1, c)
                        if 1 <= int(round(vf * (n // c))) < n // c) if vf > 0 else c
            out.append(_problem(["data", "subset", "train"], f"{n_train} images give {per_class} per class, which "
                                f"leaves no validation or no training sample per class at val_fraction {vf}; "
                                f"use at least {need}", sources))
            return out
    if not subset and not info.train_counts:
        return out
    n_fit = _fit_size(config, info)
    where = f"data.subset.train {subset['train']}" if subset else f"the {n_fit} training images of {info.name}"
    fix = "raise data.subset.train" if subset else "raise the forget share"
    tuning = (config.get("tuning") or {}).get("scenarios", [])
    keyed = [(["scenarios", i], s) for i, s in enumerate(config["scenarios"])]
    keyed += [(["tuning", "scenarios", i], s) for i, s in enumerate(tuning)]
    for key, scen in keyed:
        try:
            kind, value = parse_scenario(scen)
        except ConfigError:
            continue  # reported by _semantic_problems
        n_forget = int(round(n_fit * value / 100.0)) if kind in ("random", "backdoor") else None
        if n_forget is not None and n_forget < c:
            out.append(_problem(key, f"'{scen}' on {where} forgets about {n_forget} samples, fewer than "
                                f"the {c} k-means clusters the clustering metric needs; {fix}", sources))
    return out


def _problem(path: Sequence[Any], message: str, sources: Sequence[str | Path],
             source_path: Sequence[Any] | None = None) -> str:
    src = _source_of(path if source_path is None else source_path, sources)
    if src is None:
        src = "command-line --config"
    elif Path(src).is_absolute() and Path(src).is_relative_to(Path.cwd()):
        src = str(Path(src).relative_to(Path.cwd()))
    return f"{src}: key '{_format_path(path)}': {message}"


def tuning_space(config: dict) -> dict[str, dict]:
    """``tuning.space`` restricted to the methods the run reports (directly or as "+da")."""
    space = (config.get("tuning") or {}).get("space") or {}
    reported = {method_base(m)[0] for m in config["unlearn"]["methods"]}
    return {m: space[m] for m in sorted(space) if m in reported}


def tuning_variants(config: dict) -> dict[str, dict]:
    """Round-1 candidates of the search: ``<method>__t<NN>`` -> {base, values...} (``search.round1``).

    Rounds 2 and the DA weights are planned from scores by the tuning checkpoints.
    """
    tune = config.get("tuning") or {}
    space = tuning_space(config)
    if not space:
        return {}
    key = json.dumps([space, tune["budget"], tune["widen"], tune.get("seed", 0)], sort_keys=True)
    return {name: dict(values) for name, values in _round1(key).items()}


@functools.lru_cache(maxsize=8)
def _round1(key: str) -> dict[str, dict]:
    """``search.round1`` of a canonical (space, budget, widen, seed): the Snakefile resolves every unlearn
    job's method through the candidates, so the draw is made once per search, not once per job."""
    from .search import round1

    space, budget, widen, seed = json.loads(key)
    return round1(space, budget, widen, seed)


def all_variants(config: dict, planned: dict[str, dict] | None = None) -> dict[str, dict]:
    """Named variants: the config's, the round-1 candidates and ``planned`` (later tuning rounds)."""
    return {**config["unlearn"].get("variants", {}), **tuning_variants(config), **(planned or {})}


def resolve_method(config: dict, name: str, planned: dict[str, dict] | None = None) -> tuple[str, dict, bool]:
    """``name`` (a method, a variant, either with ``+da``) -> (base method, its hyper-parameters, +da).

    A DA-weight candidate's ``da_weight`` is not a method hyper-parameter (``da_weight``).
    """
    stem, plus_da = method_base(name)
    variants = all_variants(config, planned)
    if stem in variants:
        spec = dict(variants[stem])
        base = spec.pop("base")
        spec.pop("da_weight", None)
        return base, deep_merge(config["unlearn"][base], spec), plus_da
    return stem, config["unlearn"][stem], plus_da


def method_names(schema: dict | None = None) -> list[str]:
    """Registry names of the unlearning methods, read from the schema's ``x-method`` blocks."""
    schema = schema if schema is not None else load_schema()
    blocks = schema["properties"]["unlearn"]["properties"]
    return sorted(name for name, block in blocks.items() if block.get("x-method"))


def _space_problems(config: dict, schema: dict, known: Sequence[str], sources: Sequence[str | Path]) -> list[str]:
    """``tuning.space``: known methods, one range kind per key, ordered bounds, every bound and choice
    valid for the method (checked as a variant, so the message names the key), a budget round 2 fits in."""
    tune = config.get("tuning") or {}
    problems: list[str] = []
    if tune.get("space") and not 0 <= tune["widen"] < tune["budget"]:
        problems.append(_problem(["tuning", "widen"], f"must lie in [0, budget) = [0, {tune['budget']}); "
                                 f"got {tune['widen']}", sources))
    for method, space in (tune.get("space") or {}).items():
        where = ["tuning", "space", method]
        if method not in known:
            problems.append(_problem(where, f"unknown method '{method}'; allowed: {', '.join(known)}", sources))
            continue
        values: dict[str, list] = {}
        for key, raw in space.items():
            try:
                spec = parse_range(raw)
            except ValueError as exc:
                problems.append(_problem(where + [key], str(exc), sources))
                continue
            kind = next(k for k in KINDS if k in spec)
            bounds = list(spec[kind])
            if kind != "choice" and bounds[0] > bounds[1]:
                problems.append(_problem(where + [key], f"needs low <= high; got {bounds}", sources))
                continue
            if kind == "log" and bounds[0] <= 0:
                problems.append(_problem(where + [key], f"a log range needs low > 0; got {bounds}", sources))
                continue
            values[key] = bounds + list(spec.get("limit", []))
        first = {k: v[0] for k, v in values.items()}
        checked: set[str] = set()
        for key, vals in values.items():
            for value in vals:
                if isinstance(value, float) and math.isinf(value):
                    continue
                for msg in _variant_problems(config, schema, "space", {"base": method, **first, key: value},
                                             sources, where=where):
                    if msg not in checked:
                        checked.add(msg)
                        problems.append(msg)
    return problems


def _variant_problems(config: dict, schema: dict, name: str, spec: dict,
                      sources: Sequence[str | Path], where: Sequence[str] | None = None) -> list[str]:
    """Validate a variant's merged hyper-parameters against its base method's schema block.

    Problems are reported under ``where`` (default ``unlearn.variants.<name>``).
    """
    where = list(where) if where is not None else ["unlearn", "variants", name]
    base = spec["base"]
    if base not in config["unlearn"]:
        return [_problem(where + ["base"] if where[0] == "unlearn" else where,
                         f"base method '{base}' has no hyper-parameter block 'unlearn.{base}'", sources)]
    overrides = {k: v for k, v in spec.items() if k != "base"}
    block = deep_merge(config["unlearn"][base], overrides)
    # the method's block alone, against its part of the schema ($refs still resolve against the whole):
    # validating the whole config again for every variant and every tuning bound took most of a dry run
    validator = _root_validator(schema).evolve(schema=schema["properties"]["unlearn"]["properties"][base])
    return [_problem(where + list(err.absolute_path), _describe_error(err, schema), sources)
            for err in validator.iter_errors(block)]


_VALIDATORS: dict[int, Any] = {}


def _root_validator(schema: dict) -> Any:
    """One validator per schema object (building one walks the schema)."""
    import jsonschema

    cached = _VALIDATORS.get(id(schema))
    if cached is None or cached.schema is not schema:
        cached = _VALIDATORS[id(schema)] = jsonschema.Draft202012Validator(schema)
    return cached


def _backdoor_problems(config: dict, info, sources: Sequence[str | Path]) -> list[str]:
    """A backdoor target class that does not exist, or a trigger that does not fit the images."""
    from ..data.backdoor import resolve_trigger, trigger_problem

    bd = config["backdoor"]
    out = []
    if not 0 <= int(bd["target_class"]) < info.num_classes:
        out.append(_problem(["backdoor", "target_class"], f"class {bd['target_class']} does not exist in "
                            f"{info.name} (classes 0..{info.num_classes - 1})", sources))
    problem = trigger_problem(resolve_trigger(bd["trigger"], info), info)
    if problem:
        out.append(_problem(["backdoor", "trigger", problem[0]], problem[1], sources))
    return out


def _audit_problems(config: dict, info, sources: Sequence[str | Path]) -> list[str]:
    """The audit's scenarios are random or class-wise ones of the data set, its methods run in the
    run (their hyper-parameters come from ``unlearn``)."""
    audit = config.get("audit") or {}
    if not audit.get("enabled"):
        return []
    problems = []
    if not audit["scenarios"]:
        problems.append(_problem(["audit", "scenarios"], "empty: name at least one random<P> or class<C> scenario",
                                 sources))
    for i, scen in enumerate(audit["scenarios"]):
        try:
            kind, value = parse_scenario(scen)
        except ConfigError as exc:
            problems.append(_problem(["audit", "scenarios", i], str(exc), sources))
            continue
        if kind == "backdoor":
            problems.append(_problem(["audit", "scenarios", i], f"'{scen}': the audit runs on random<P> and "
                                     "class<C> scenarios only", sources))
        elif kind == "random" and not 0 < value < 100:
            problems.append(_problem(["audit", "scenarios", i], f"'{scen}': forget ratio must be > 0 and < 100 %",
                                     sources))
        elif kind == "class" and not 0 <= value < info.num_classes:
            problems.append(_problem(["audit", "scenarios", i], f"'{scen}': class {value} does not exist in "
                                     f"{info.name} (classes 0..{info.num_classes - 1})", sources))
    for i, method in enumerate(audit["methods"]):
        if method not in config["unlearn"]["methods"]:
            problems.append(_problem(["audit", "methods", i], f"'{method}' is not one of unlearn.methods "
                                     f"({', '.join(config['unlearn']['methods'])})", sources))
    return problems


def _scenario_kind(name: str) -> str | None:
    try:
        return parse_scenario(name)[0]
    except ConfigError:
        return None


def _semantic_problems(config: dict, schema: dict, sources: Sequence[str | Path]) -> list[str]:
    problems = []
    known = method_names(schema)
    info = DATASETS[config["dataset"]]
    tuning_scenarios = [(["tuning", "scenarios", i], s) for i, s in enumerate((config.get("tuning") or {}).get("scenarios", []))]
    for key, scen in [(["scenarios", i], s) for i, s in enumerate(config["scenarios"])] + tuning_scenarios:
        try:
            kind, value = parse_scenario(scen)
        except ConfigError as exc:
            problems.append(_problem(key, str(exc), sources))
            continue
        if kind in ("random", "backdoor") and not 0 < value < 100:
            problems.append(
                _problem(key, f"'{scen}': forget ratio must be > 0 and < 100 %", sources)
            )
        if kind == "class" and not 0 <= value < info.num_classes:
            problems.append(
                _problem(
                    key,
                    f"'{scen}': class {value} does not exist in {info.name} "
                    f"(classes 0..{info.num_classes - 1})",
                    sources,
                )
            )
    scenarios = config["scenarios"] + list((config.get("tuning") or {}).get("scenarios", []))
    if any(_scenario_kind(s) == "backdoor" for s in scenarios):
        problems += _backdoor_problems(config, info, sources)
    variants = config["unlearn"].get("variants", {})
    reserved = set(known) | {"original", "retrain", "retrain_alt", "da", "methods", "variants"}
    for vname, vspec in variants.items():
        if vname in reserved:
            problems.append(_problem(["unlearn", "variants", vname],
                                     f"variant name '{vname}' is taken; choose another", sources))
        elif vspec["base"] not in known:
            problems.append(_problem(["unlearn", "variants", vname, "base"],
                                     f"unknown base method '{vspec['base']}'; allowed: {', '.join(known)}", sources))
        else:
            problems.extend(_variant_problems(config, schema, vname, vspec, sources))
    problems.extend(_space_problems(config, schema, known, sources))
    problems.extend(_name_list_problems(config, known, variants, sources))
    for i, method in enumerate(config["unlearn"]["methods"]):
        stem, plus_da = method_base(method)
        base = variants[stem]["base"] if stem in variants and variants[stem]["base"] in known else stem
        if stem not in known and stem not in variants:
            problems.append(
                _problem(
                    ["unlearn", "methods", i],
                    f"unknown method '{method}'; allowed: {', '.join(sorted(set(known) | set(variants)))} "
                    "(each optionally with the suffix +da)",
                    sources,
                )
            )
        elif base not in config["unlearn"]:
            problems.append(
                _problem(
                    ["unlearn", "methods", i],
                    f"method '{method}' has no hyper-parameter block 'unlearn.{base}'",
                    sources,
                )
            )
        elif plus_da and da_plugin_refusal(config, base) is not None:
            problems.append(_problem(["unlearn", "methods", i],
                                     f"'{method}' is not allowed: {da_plugin_refusal(config, base)}", sources))
    if config["dataset"] == "fashion_mnist" and not config["data"]["download"]:
        dirs = [Path(d) for d in config["data"]["fashion_mnist_dirs"]]
        if not any(d.is_dir() for d in dirs):
            problems.append(
                _problem(
                    ["data", "fashion_mnist_dirs"],
                    "none of these directories exists and data.download is false: "
                    + ", ".join(map(str, dirs))
                    + "; put the IDX files in one of them, install Debian's dataset-fashion-mnist, "
                    "or set data.download: true",
                    sources,
                )
            )
    problems.extend(_subset_problems(config, sources))
    problems.extend(_audit_problems(config, info, sources))
    if config["arch"] == "resnet18" and info.size < 32:
        problems.append(
            _problem(["arch"], f"resnet18 expects 32x32 images; {info.name} is {info.size}x{info.size}; "
                     "use smallcnn", sources)
        )
    return problems
