"""Where a profile's tuned values come from, checked against today's code and config.

A profile names the kept search that chose its tuned values (``tuning.selection``, a
``config/tuning/<profile>-selection.json``) and the ``make da-energy`` result behind
``evaluation.da.energy`` (``tuning.da_energy``). Each records what it was made with: the search's
space, budget, seeds and scenarios, and per method the code hashes of ``pipeline.tuned_code`` (the
method's own files, the shared training code, the scoring code). A tuned value goes stale when any
of these changes; :func:`problems` lists every way a profile's tuned values disagree with their
artifact, and ``tests/test_profiles.py`` fails on any.

In a profile file, a comment that starts with ``tuned`` marks the value(s) of its line as chosen
by the profile's selection: ``lr: 0.0123  # tuned`` (the one key of the line), or
``ft: {epochs: 7, lr: 0.00759}  # tuned: epochs, lr`` (the listed keys of a flow mapping).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any
from collections.abc import Iterator, Sequence

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap

from .. import pipeline as P
from ..settings.config import DEFAULT_CONFIG, load_config, method_base, read_yaml, tuning_space
from ..settings.search import DA_WEIGHT
from .apply_selection import same_value

_MARK = re.compile(r"#\s*tuned\b(?::\s*(?P<keys>[A-Za-z0-9_, ]+?))?\s*(?:[(;].*)?$")
KeyPath = tuple[str, ...]


def _key_lines(node: Any, path: KeyPath = ()) -> Iterator[tuple[KeyPath, int]]:
    """Every key path of a round-trip mapping with the line its key stands on (0-based)."""
    if not isinstance(node, CommentedMap):
        return
    for key in node:
        line, _ = node.lc.key(key)
        yield path + (str(key),), line
        yield from _key_lines(node[key], path + (str(key),))


def tuned_marks(path: str | os.PathLike) -> set[KeyPath]:
    """The key paths a profile file marks ``tuned`` (module docstring: the two forms)."""
    text = Path(path).read_text()
    lines = text.splitlines()
    by_line: dict[int, list[KeyPath]] = {}
    for keys, line in _key_lines(YAML().load(text) or CommentedMap()):
        by_line.setdefault(line, []).append(keys)
    marked: set[KeyPath] = set()
    for line, paths in by_line.items():
        comment = lines[line].partition("#")[2]
        match = _MARK.match("#" + comment) if comment else None
        if match is None:
            continue
        if match["keys"]:
            names = [k.strip() for k in match["keys"].split(",") if k.strip()]
            found = [p for p in paths if p[-1] in names]
            missing = set(names) - {p[-1] for p in found}
            if missing:
                raise ValueError(f"{path}:{line + 1}: marks {', '.join(sorted(missing))} tuned, "
                                 "but no such key stands on the line")
            marked.update(found)
        elif len(paths) == 1:
            marked.add(paths[0])
        else:
            raise ValueError(f"{path}:{line + 1}: '# tuned' on a line of {len(paths)} keys; "
                             "name them: '# tuned: key, key'")
    return marked


def _read(path: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"tuning.{what}: {path} cannot be read as JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise ValueError(f"tuning.{what}: {path} is not a JSON object")
    return value


def chosen_paths(selection: dict[str, Any]) -> dict[KeyPath, Any]:
    """Config key path -> value of every choice of a selection (a ``+da`` choice: its DA weight)."""
    out: dict[KeyPath, Any] = {}
    for method, entry in selection["chosen"].items():
        base = method.removesuffix("+da")
        for key, value in entry["values"].items():
            if key == DA_WEIGHT:
                out[("unlearn", "da", "weights", base)] = value
            elif not method.endswith("+da"):
                out[("unlearn", base, key)] = value
    return out


def _get(config: dict, path: KeyPath) -> Any:
    node: Any = config
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return KeyError
        node = node[key]
    return node


def _selection_problems(config: dict, selection: dict[str, Any], where: str) -> list[str]:
    problems = []
    today = P.tuning_provenance(config)
    if "search" not in selection or "code" not in selection:
        return [f"{where} records neither the search nor the code it was made with; `make tune` makes one "
                "that does"]
    recorded_search = selection["search"]
    for key, value in today["search"].items():
        if key == "space":
            for method, space in value.items():
                if recorded_search.get("space", {}).get(method) != space:
                    problems.append(f"{where}: {method}'s search space today is {space}, the selection's "
                                    f"{recorded_search.get('space', {}).get(method)}")
        elif recorded_search.get(key) != value:
            problems.append(f"{where}: tuning.{key} today is {value!r}, the selection's {recorded_search.get(key)!r}")
    recorded_code = selection.get("code") or {}
    for method, code in today["code"].items():
        then = recorded_code.get(method)
        if then != code:
            changed = ", ".join(k for k in code if (then or {}).get(k) != code[k])
            problems.append(f"{where}: {method} was searched with other code ({changed}: "
                            f"{then} then, {code} now); `make tune` chooses its values again")
    for path, value in chosen_paths(selection).items():
        if path[1] in tuning_space(config) or (path[1] == "da" and path[3] in P.da_tuning_methods(config)):
            actual = _get(config, path)
            if not same_value(actual, value):
                problems.append(f"{'.'.join(path)}: the profile has {actual!r}, {where} chose {value!r}")
    return problems


def _overlay_sets(files: Sequence[str | os.PathLike], path: KeyPath) -> bool:
    """Whether one of the overlay files (not the default config) sets ``path``."""
    return any(_get(read_yaml(f) or {}, path) is not KeyError for f in files)


def problems(files: Sequence[str | os.PathLike] = (), base: str | os.PathLike = DEFAULT_CONFIG) -> list[str]:
    """Every way the tuned values of the profile ``base`` + ``files`` disagree with their artifacts."""
    config = load_config(files, base=base)
    default = load_config(base=base)
    try:
        return _problems(config, default, files, base)
    except ValueError as exc:  # an artifact that is missing or no JSON object
        return [str(exc)]


def _problems(config: dict, default: dict, files: Sequence[str | os.PathLike], base: str | os.PathLike) -> list[str]:
    out: list[str] = []
    sel_path = config["tuning"].get("selection")
    selection = _read(sel_path, "selection") if sel_path else None
    chosen = chosen_paths(selection) if selection else {}
    if selection is not None:
        out += _selection_problems(config, selection, sel_path)
    layers = [base, *files]
    for i, f in enumerate(layers):
        for path in sorted(tuned_marks(f)):
            if _overlay_sets(layers[i + 1:], path):
                continue  # a later file sets the value: this mark does not speak for the profile
            if path not in chosen and not any(c[: len(path)] == path for c in chosen):
                out.append(f"{f}: {'.'.join(path)} is marked tuned, but "
                           f"{sel_path or 'no selection (tuning.selection: null)'} did not choose it")
    if sel_path != default["tuning"].get("selection") and default["tuning"].get("selection"):
        # another profile's search chose the default's tuned values: this profile must set its own
        reported = {method_base(m)[0] for m in config["unlearn"]["methods"]}
        for path in chosen_paths(_read(default["tuning"]["selection"], "selection")):
            used = path[1] in reported if path[1] != "da" else f"{path[3]}+da" in config["unlearn"]["methods"]
            if used and not _overlay_sets(files, path):
                out.append(f"{'.'.join(path)}: inherited from {default['tuning']['selection']}, a search on "
                           f"other data; the profile sets no value of its own")
    out += _da_energy_problems(config, default, files)
    if (config["dataset"], config["arch"]) != (default["dataset"], default["arch"]):
        for key in ("selection", "da_energy"):
            if config["tuning"].get(key) and config["tuning"].get(key) == default["tuning"].get(key):
                out.append(f"tuning.{key}: {config['tuning'][key]} was made on {default['dataset']} "
                           f"({default['arch']}); a {config['dataset']} profile names its own, or null")
    return out


def _da_energy_problems(config: dict, default: dict, files: Sequence[str | os.PathLike]) -> list[str]:
    path = config["tuning"].get("da_energy")
    energy = config["evaluation"]["da"]["energy"]
    out = []
    if path:
        try:
            result = _read(path, "da_energy")
        except ValueError as exc:
            return [str(exc)]
        if not same_value(result.get("chosen_energy"), energy):
            out.append(f"evaluation.da.energy: the profile has {energy!r}, {path} chose {result.get('chosen_energy')!r}")
        today = P.da_energy_provenance(config)
        for key in ("search", "code"):
            if result.get(key) != today[key]:
                out.append(f"{path}: chosen with {key} {result.get(key)}, today's is {today[key]}; "
                           "`make da-energy` chooses the energy again")
    if path != default["tuning"].get("da_energy") and not _overlay_sets(files, ("evaluation", "da", "energy")):
        out.append(f"evaluation.da.energy: inherited from {default['tuning'].get('da_energy')}, chosen on other "
                   "data; the profile sets no value of its own")
    return out
