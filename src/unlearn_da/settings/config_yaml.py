"""Read a config file as data only: no code, no bombs, no silently lost or misread setting.

``yaml.safe_load`` already refuses Python tags, but three things still go wrong with it:

- aliases of shared containers expand, for any walk over the result, into exponentially many
  nodes (nine levels of nine aliases: 9^9 leaves from a file of a few hundred bytes);
- a key given twice keeps the last value and drops the first without a word;
- YAML 1.1 reads ``on``/``off``/``yes``/``no`` as booleans and ``1e-3`` (no dot) as a string.

:func:`load_yaml_text` refuses all three, naming the file, the line and how to write the value.
Nothing here imports torch or jsonschema: the Snakefile and every make target run it first.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from ..core.errors import ConfigError, short

#: nodes a config may hold once its aliases are expanded (the largest shipped one has under 2,000)
MAX_EXPANDED_NODES = 100_000
#: bytes a config file may hold (the largest shipped one has under 20 kB)
MAX_FILE_BYTES = 1_000_000

_BOOL_WORDS = {"true", "false"}
_EXPONENT_WITHOUT_DOT = re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)$")


class _StrictConstructor(yaml.constructor.SafeConstructor):
    """SafeConstructor that refuses duplicate keys and YAML 1.1's surprising scalars."""

    source = "<config>"

    def _fail(self, node: yaml.Node, message: str) -> None:
        raise ConfigError(f"{self.source}: line {node.start_mark.line + 1}: {message}")

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:  # type: ignore[override]
        seen: dict[Any, int] = {}
        merges: list[int] = []
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base`, then keys that override it: valid
                merges.append(key_node.start_mark.line + 1)
                if len(merges) > 1:  # a second `<<` replaces the first: list both in one `<<: [*a, *b]`
                    self._fail(key_node, f"`<<` is given twice (lines {merges[0]} and {merges[1]}); YAML would "
                                         "keep only the last: merge both with `<<: [*first, *second]`")
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self._fail(key_node, "a key must be a plain value, not a list or a mapping")
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in seen:
                self._fail(key_node, f"key {short(key)} is given twice (lines {seen[key]} and {line}); "
                                     "YAML would keep only the last one: merge the two into one")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_bool(self, node: yaml.ScalarNode) -> bool:  # type: ignore[override]
        if node.value.lower() not in _BOOL_WORDS:
            self._fail(node, f"{short(node.value)} is read as a boolean by YAML 1.1; write true or false "
                             f"(or quote it, '{node.value}', if you mean the text)")
        return super().construct_yaml_bool(node)

    def construct_yaml_str(self, node: yaml.ScalarNode) -> str:  # type: ignore[override]
        if not node.style and _EXPONENT_WITHOUT_DOT.match(node.value):  # plain: None (Python), "" (libyaml)
            mantissa, exponent = re.split("[eE]", node.value)
            self._fail(node, f"{short(node.value)} is read as text by YAML 1.1 (a number needs a dot before "
                             f"the exponent); write {mantissa}.0e{exponent}")
        return super().construct_yaml_str(node)


_StrictConstructor.add_constructor("tag:yaml.org,2002:bool", _StrictConstructor.construct_yaml_bool)
_StrictConstructor.add_constructor("tag:yaml.org,2002:str", _StrictConstructor.construct_yaml_str)


class _StrictLoader(yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser, yaml.composer.Composer,
                    _StrictConstructor, yaml.resolver.Resolver):
    """The pure-Python parser with the strict constructor."""

    def __init__(self, stream: str) -> None:
        yaml.reader.Reader.__init__(self, stream)
        yaml.scanner.Scanner.__init__(self)
        yaml.parser.Parser.__init__(self)
        yaml.composer.Composer.__init__(self)
        _StrictConstructor.__init__(self)
        yaml.resolver.Resolver.__init__(self)


if getattr(yaml, "__with_libyaml__", False):
    class _StrictCLoader(yaml.cyaml.CParser, _StrictConstructor, yaml.resolver.Resolver):  # type: ignore[misc]
        """libyaml's parser (several times faster: the Snakefile and every make target read the configs
        and the schema) with the same strict constructor; the nodes and the checks are the same."""

        def __init__(self, stream: str) -> None:
            yaml.cyaml.CParser.__init__(self, stream)
            _StrictConstructor.__init__(self)
            yaml.resolver.Resolver.__init__(self)

    _PARSER: type = _StrictCLoader
    _SCANNER: type = yaml.CSafeLoader
else:  # a PyYAML built without libyaml
    _PARSER = _StrictLoader
    _SCANNER = yaml.SafeLoader


def expanded_size(node: yaml.Node, source: str, limit: int = MAX_EXPANDED_NODES) -> int:
    """Nodes of ``node`` with every alias expanded; refuses cycles and more than ``limit`` nodes.

    Shared nodes are counted once per use (that is what a walk over the loaded data visits) but
    computed once, so the count itself takes time linear in the file.
    """
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(n: yaml.Node) -> int:
        key = id(n)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise ConfigError(f"{source}: line {n.start_mark.line + 1}: an alias refers to a node that contains "
                              "it (a recursive structure); a config must be a tree")
        active.add(key)
        total = 1
        if isinstance(n, yaml.SequenceNode):
            total += sum(size(child) for child in n.value)
        elif isinstance(n, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in n.value)
        active.discard(key)
        if total > limit:
            raise ConfigError(f"{source}: line {n.start_mark.line + 1}: its anchors and aliases expand to more "
                              f"than {limit:,} values (a YAML alias bomb?); write the values out instead "
                              "of nesting aliases")
        sizes[key] = total
        return total

    return size(node)


def load_yaml_text(text: str, source: str) -> Any:
    """Parse one YAML document as plain data; every refusal names ``source`` and a line."""
    if len(text.encode("utf-8", errors="replace")) > MAX_FILE_BYTES:
        raise ConfigError(f"{source}: {len(text):,} characters; a config file is at most "
                          f"{MAX_FILE_BYTES:,} bytes")
    loader = None
    try:
        _check_depth(text, source)  # before the parser, whose recursion a deep document exhausts
        loader = _PARSER(text)  # reads the stream: a raw control character is refused here
        loader.source = source
        node = loader.get_single_node()
        if node is None:
            return None
        if _depth(node) > MAX_DEPTH:
            raise ConfigError(f"{source}: nested more than {MAX_DEPTH} levels deep; a config is a shallow tree")
        expanded_size(node, source)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {short(str(exc), 400)}") from exc
    except RecursionError:
        raise ConfigError(f"{source}: nested too deeply to read; a config is a shallow tree") from None
    finally:
        if loader is not None:
            loader.dispose()


#: levels of nesting a config may have (the shipped ones have at most 5)
MAX_DEPTH = 32


_OPEN = (yaml.BlockMappingStartToken, yaml.BlockSequenceStartToken, yaml.FlowMappingStartToken,
         yaml.FlowSequenceStartToken)
_CLOSE = (yaml.BlockEndToken, yaml.FlowMappingEndToken, yaml.FlowSequenceEndToken)


def _check_depth(text: str, source: str) -> None:
    """Refuse more than ``MAX_DEPTH`` nested collections from the token stream (the scanner does not
    recurse; the composer does)."""
    depth = 0
    for token in yaml.scan(text, Loader=_SCANNER):
        if isinstance(token, _OPEN):
            depth += 1
            if depth > MAX_DEPTH:
                raise ConfigError(f"{source}: line {token.start_mark.line + 1}: nested more than {MAX_DEPTH} "
                                  "levels deep; a config is a shallow tree")
        elif isinstance(token, _CLOSE):
            depth -= 1


def _depth(node: yaml.Node) -> int:
    """Nesting depth of a composed node, without recursion (an alias counts where it stands)."""
    deepest, stack, seen = 0, [(node, 1)], set()
    while stack:
        n, level = stack.pop()
        deepest = max(deepest, level)
        if id(n) in seen or level > MAX_DEPTH:
            continue
        seen.add(id(n))
        if isinstance(n, yaml.SequenceNode):
            stack.extend((child, level + 1) for child in n.value)
        elif isinstance(n, yaml.MappingNode):
            stack.extend((child, level + 1) for pair in n.value for child in pair)
    return deepest


def load_yaml_file(path: str | Path) -> Any:
    """:func:`load_yaml_text` of a file, with a message for a missing or unreadable one."""
    p = Path(path)
    if p.exists() and not p.is_file():
        raise ConfigError(f"{short(str(p), 80)}: not a regular file (a config file must be one)")
    if not p.is_file():
        raise ConfigError(f"{short(str(p), 80)}: config file not found (make's PROFILE lists overlay files "
                          "separated by spaces, so a file name cannot contain one)")
    if p.stat().st_size > MAX_FILE_BYTES:
        raise ConfigError(f"{p}: {p.stat().st_size:,} bytes; a config file is at most {MAX_FILE_BYTES:,} bytes")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    return load_yaml_text(text, str(p))
