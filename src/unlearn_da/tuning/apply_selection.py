"""Write a search's chosen values into a profile, keeping its comments and layout.

``make tune`` leaves ``results/<run>/tuning/selection.json``; its ``chosen`` block holds, per
method, the values of the picked candidate. This module copies them into a config file's
``unlearn.<method>`` blocks and the ``+da`` weights into ``unlearn.da.weights``, so nobody
types them by hand (``tests/test_profiles.py`` then checks that config and selection agree).
ruamel's round-trip parser says where each value stands; only those tokens are rewritten, so
comments and layout stay. Floats are written in a form PyYAML reads as floats (``3.0e-05``,
never ``3e-05``, which YAML 1.1 reads as a string), and the result is read back to check.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap

from ..core.errors import ConfigError, short
from ..settings.config_yaml import load_yaml_text
from ..settings.search import DA_WEIGHT


def _float_text(value: float) -> str:
    """Shortest repr, with a dot in the mantissa so YAML 1.1 (PyYAML, Snakemake) reads a float."""
    text = repr(float(value))
    if "e" in text and "." not in text.split("e")[0]:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}.0e{exponent}"
    return text


def _text(value: Any) -> str:
    """A value as it goes into the YAML file (flow style for mappings), through a YAML emitter: a string
    is written as YAML would quote it, never pasted raw."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _float_text(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_text(k)}: {_text(v)}" for k, v in sorted(value.items())) + "}"
    if isinstance(value, int):
        return str(value)
    return yaml.safe_dump(str(value), default_flow_style=True, width=10**6).removesuffix("\n...\n").strip()


def _schema_for(config_path: str | os.PathLike) -> dict:
    """The schema the target profile's methods are checked against: the package's, with a block per method
    of its ``unlearn.external`` (a user's own method, ``methods/external.py``)."""
    from ..settings.config import DEFAULT_CONFIG, load_config, load_schema, schema_with_external

    path = Path(config_path)
    try:
        config = load_config(base=path) if path.resolve() == Path(DEFAULT_CONFIG).resolve() else load_config([path])
    except (ConfigError, OSError):
        return load_schema()  # the rewrite reports what is wrong with the file
    return schema_with_external(config, load_schema())[0]


def chosen_values(selection_path: str | os.PathLike, schema: dict | None = None) -> dict[str, dict[str, Any]]:
    """Method -> chosen values, from a selection.json written by ``select-hyperparameters``; every method
    must be one of the schema's (a ``+da`` one a method that takes the DA plug-in), every key one of that
    method's, every value a scalar: the file is a pipeline output shared through DVC, not trusted."""
    from ..methods import NO_DA_PLUGIN
    from ..settings.config import load_schema

    path = Path(selection_path)
    try:
        chosen = json.loads(path.read_text())["chosen"]
        values = {method: dict(entry["values"]) for method, entry in chosen.items()}
    except (OSError, json.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError) as exc:
        raise ConfigError(f"{path}: not a selection.json with a 'chosen' block ({short(str(exc), 200)})") from exc
    schema = schema if schema is not None else load_schema()
    blocks = schema["properties"]["unlearn"]["properties"]
    methods = {name for name, block in blocks.items() if block.get("x-method")}
    for method, keys in values.items():
        base = method.removesuffix("+da")
        if base not in methods or (method.endswith("+da") and (base in NO_DA_PLUGIN or blocks[base].get("x-no-da"))):
            raise ConfigError(f"{path}: chosen method {short(method, 80)} is not a method of the schema"
                              + (" that takes the DA plug-in" if method.endswith("+da") else ""))
        allowed = _block_keys(blocks[base], schema) | ({DA_WEIGHT} if method.endswith("+da") else set())
        for key, value in keys.items():
            if key not in allowed:
                raise ConfigError(f"{path}: {method}: {short(key, 80)} is not a key of unlearn.{base}; "
                                  f"allowed: {', '.join(sorted(allowed))}")
            if not isinstance(value, (bool, int, float, str)) or (isinstance(value, str) and not
                                                                   _SAFE_STRING.fullmatch(value)):
                raise ConfigError(f"{path}: {method}.{key}: {short(value, 80)} is not a number, a boolean or a "
                                  "plain name")
    return values


_SAFE_STRING = re.compile(r"[A-Za-z0-9_.+-]{1,64}")


def _block_keys(block: dict, schema: dict) -> set[str]:
    """The property names of a schema block, its ``$ref``'d ``$defs`` block included."""
    keys = set(block.get("properties", {}))
    ref = block.get("$ref")
    if ref:
        keys |= set(schema["$defs"][ref.rsplit("/", 1)[-1]].get("properties", {}))
    return keys


def _wanted(chosen: dict[str, dict[str, Any]]) -> dict[tuple[str, ...], dict[str, Any]]:
    """Mapping path under the document -> the keys and values it must hold."""
    wanted: dict[tuple[str, ...], dict[str, Any]] = {}
    for method, values in chosen.items():
        if method.endswith("+da"):
            wanted.setdefault(("unlearn", "da", "weights"), {})[method[: -len("+da")]] = values[DA_WEIGHT]
        else:
            wanted.setdefault(("unlearn", method), {}).update(values)
    return wanted


def same_value(old: Any, new: Any) -> bool:
    """Equal, and a float where the other is one (and a bool likewise): 3 and 3.0 are not the same value
    in a config file that PyYAML reads."""
    return old == new and isinstance(old, float) == isinstance(new, float) and isinstance(old, bool) == isinstance(new, bool)


def _closing_brace(lines: list[str], line: int, col: int) -> tuple[int, int]:
    """Where the flow mapping that opens at (line, col) closes."""
    depth = 0
    for i in range(line, len(lines)):
        for j in range(col if i == line else 0, len(lines[i])):
            ch = lines[i][j]
            if ch == "#" and depth and (j == 0 or lines[i][j - 1] in " \t"):
                break  # a comment inside a multi-line flow mapping
            depth += {"{": 1, "}": -1}.get(ch, 0)
            if depth == 0:
                return i, j
    raise ConfigError(f"line {line + 1}: unclosed flow mapping")


def _edits(doc: CommentedMap, lines: list[str], wanted: dict[tuple[str, ...], dict[str, Any]],
           changes: list[str]) -> list[tuple[int, int, int, str]]:
    """(line, start column, end column, new text) splices; a missing mapping is added to its parent."""
    edits: list[tuple[int, int, int, str]] = []
    for path, values in sorted(wanted.items()):
        where = ".".join(path)
        parent: Any = doc
        for depth, key in enumerate(path):
            node = parent.get(key) if isinstance(parent, dict) else None
            if node is None:  # add the whole rest of the path as one flow mapping
                rest: Any = dict(values)
                for k in reversed(path[depth + 1:]):
                    rest = {k: rest}
                edits.extend(_insert(parent, lines, key, rest, ".".join(path[:depth]) or "the file"))
                changes.append(f"{where}: added {_text(rest)}")
                break
            if not isinstance(node, CommentedMap):
                raise ConfigError(f"{'.'.join(path[:depth + 1])} is not a mapping")
            parent = node
        else:
            missing = {}
            for key, value in sorted(values.items()):
                if key not in parent:
                    missing[key] = value
                    changes.append(f"{where}.{key}: added {_text(value)}")
                elif not same_value(parent[key], value):
                    line, col = parent.lc.value(key)
                    token = re.match(r"[^,}\]#\s]+", lines[line][col:])
                    if token is None:
                        raise ConfigError(f"{where}.{key} (line {line + 1}) is not a plain scalar")
                    edits.append((line, col, col + token.end(), _text(value)))
                    changes.append(f"{where}.{key}: {parent[key]!r} -> {value!r}")
            for key, value in missing.items():
                edits.extend(_insert(parent, lines, key, value, where))
    return edits


def _insert(mapping: CommentedMap, lines: list[str], key: str, value: Any, where: str) -> list[tuple[int, int, int, str]]:
    """The splice that adds ``key: value`` to ``mapping`` (flow: before its brace; block: a first line)."""
    if not mapping:
        raise ConfigError(f"{where} is empty; write its first key by hand")
    first = next(iter(mapping))
    line, col = mapping.lc.key(first)
    if mapping.fa.flow_style():
        open_line, open_col = line, lines[line].rindex("{", 0, col + 1)
        end_line, end_col = _closing_brace(lines, open_line, open_col)
        return [(end_line, end_col, end_col, f", {key}: {_text(value)}")]
    return [(line, 0, 0, f"{' ' * col}{key}: {_text(value)}  # tuned\n")]


def apply_selection(selection_path: str | os.PathLike, config_path: str | os.PathLike) -> list[str]:
    """Write the chosen values into ``config_path`` (atomically); what changed, one line each.

    Only the changed values are rewritten, in place; every other byte of the file stays.
    """
    chosen = chosen_values(selection_path, _schema_for(config_path))
    wanted = _wanted(chosen)
    path = Path(config_path)
    text = path.read_text()
    doc = YAML().load(text)  # round-trip mode: every node knows its line and column
    if not isinstance(doc, CommentedMap):
        raise ConfigError(f"{path}: not a YAML mapping")
    lines = text.splitlines(keepends=True)
    changes: list[str] = []
    for line, start, end, new in sorted(_edits(doc, lines, wanted, changes), reverse=True):
        lines[line] = lines[line][:start] + new + lines[line][end:]
    result = "".join(lines)
    _check(yaml.safe_load(result), wanted, path)
    _only_wanted_changed(load_yaml_text(text, str(path)), load_yaml_text(result, str(path)), wanted, path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(result)
        _validate_written(Path(tmp), path)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return changes


def _leaves(node: Any, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    if isinstance(node, dict):
        out: dict[tuple[str, ...], Any] = {}
        for key, value in node.items():
            out.update(_leaves(value, prefix + (str(key),)))
        return out or {prefix: {}}
    return {prefix: node}


def _only_wanted_changed(before: Any, after: Any, wanted: dict[tuple[str, ...], dict[str, Any]], path: Path) -> None:
    """Every key path that the rewrite added, removed or changed is one of the chosen values."""
    allowed = {keys + (key,) for keys, values in wanted.items() for key in values}
    old, new = _leaves(before), _leaves(after)
    stray = sorted(k for k in set(old) | set(new) if old.get(k, KeyError) != new.get(k, KeyError)
                   and k not in allowed and not any(a[: len(k)] == k for a in allowed))
    if stray:
        raise ConfigError(f"{path}: writing the selection would change {', '.join('.'.join(k) for k in stray[:5])}, "
                          "which the selection does not choose; the file is left as it was")


def _validate_written(written: Path, target: Path) -> None:
    """The whole config the rewritten file gives (over the default config, unless it is the default)
    validates, as the pipeline will read it."""
    from ..settings.config import DEFAULT_CONFIG, load_config, validate_config

    if target.resolve() == Path(DEFAULT_CONFIG).resolve():
        config, sources = load_config(base=written), [str(written)]
    else:
        config, sources = load_config([written]), [str(DEFAULT_CONFIG), str(written)]
    try:
        validate_config(config, sources=sources)
    except ConfigError as exc:
        problems = str(exc).replace(str(written), str(target))  # the temporary copy is not the user's file
        raise ConfigError(f"{target}: the selection would make an invalid config; the file is left as it "
                          f"was:\n{problems}") from exc


def _check(doc: dict, wanted: dict[tuple[str, ...], dict[str, Any]], path: Path) -> None:
    """Read back with PyYAML, as Snakemake reads a config file: every value must be there, typed as chosen."""
    for keys, values in wanted.items():
        node: Any = doc
        for key in keys:
            node = node.get(key) if isinstance(node, dict) else None
        for key, value in values.items():
            got = node.get(key) if isinstance(node, dict) else None
            if not same_value(got, value):
                raise ConfigError(f"{path}: writing {'.'.join(keys)}.{key} = {value!r} read back as {got!r}")
