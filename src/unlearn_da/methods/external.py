"""Unlearning methods from outside the package: a user's own file, or a module of an installed package.

A profile declares them under ``unlearn.external`` (docs/own-method.md)::

    unlearn:
      external:
        forget_penalty: {file: examples/own_method/forget_penalty.py}
        # or, from an installed package: {module: my_lab.unlearning.forget_penalty}
      methods: [ft, forget_penalty, forget_penalty+da]
      forget_penalty: {epochs: 2, batch_size: 32, lr: 0.01, beta: 0.5}

The profile names the code rather than an entry-point group discovering it: the run's config then says
which code made which rows, installing a package never changes a DAG, and a name is checked against the
built-in ones where it is declared.

What the file declares is read without running it (``ast``): the Snakefile builds the DAG without torch,
and a file that cannot be read, lacks ``run(ctx, hp)``, declares an API version this package does not
serve or imports a module that is not installed is refused before the first job, naming the method. A
job imports the file (``load_run``).

No torch import here.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import ConfigError
from .api import API_VERSION

# versions of the method API (docs/method-api.md, ``api.py``) this package serves; a method declares its own
API_VERSIONS = (API_VERSION,)
# the hyper-parameter schema of a method that declares none: the optimiser keys of every trained method
DEFAULT_HYPERPARAMETERS: dict[str, Any] = {"$ref": "#/$defs/optim", "unevaluatedProperties": False}
DECLARATIONS = ("API_VERSION", "HYPERPARAMETERS", "DA_PLUGIN", "DESCRIPTION")
NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")
MAX_SOURCE_BYTES = 1 << 20  # a method's file is read whole to find its declarations


class MethodSourceError(ConfigError):
    """A declared method's source that cannot be used; the message says why (the caller adds the key)."""


@dataclass(frozen=True)
class ExternalMethod:
    """What the pipeline knows of a declared method before any job runs."""

    name: str
    source: dict[str, str]  # {"file": path} or {"module": dotted name}, as the profile states it
    hyperparameters: dict[str, Any]  # JSON schema of its ``unlearn.<name>`` block
    da_plugin: str | None  # None: takes "+da"; else why it cannot
    description: str
    files: tuple[tuple[str, str], ...]  # (label, path) of the code its jobs run: its code hash

    def digests(self) -> list[tuple[str, str]]:
        """(label, SHA-256 of the file's bytes) of every file of the method's code."""
        return [(label, hashlib.sha256(Path(path).read_bytes()).hexdigest()) for label, path in self.files]

    def semantic_digests(self) -> list[tuple[str, str]]:
        """(label, SHA-256 of the syntax tree without docstrings): what a tuned value is valid for."""
        return [(label, syntax_digest(Path(path).read_text())) for label, path in self.files]


def syntax_digest(text: str) -> str:
    """SHA-256 of a module's syntax tree with its docstrings removed (comments and layout do not count
    either), and without a top-level ``images`` function: a method's image-count declaration
    (``counting.py``), which no job runs, changes no tuned value."""
    tree = ast.parse(text)
    tree.body = [node for node in tree.body if not (isinstance(node, ast.FunctionDef) and node.name == "images")]
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
    return hashlib.sha256(ast.dump(tree, include_attributes=False).encode()).hexdigest()


# ------------------------------------------------------------------------------ reading a source
def _find_spec(name: str):
    try:
        return importlib.util.find_spec(name)
    except (ImportError, ValueError):  # a parent package that is missing or fails to import
        return None


def _module_files(module: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """The module's source file and the code its jobs run: every ``.py`` file of its top-level package
    (a module may import its siblings), or the module alone."""
    spec = _find_spec(module)
    if spec is None:
        raise MethodSourceError(f"module {module!r} cannot be imported: no such module is installed "
                                "(pip install its package, or name a file with 'file:')")
    origin = spec.origin
    if not origin or not origin.endswith(".py"):
        raise MethodSourceError(f"module {module!r} has no Python source to read ({origin})")
    top = module.split(".")[0]
    top_spec = _find_spec(top)
    locations = list(top_spec.submodule_search_locations or []) if top_spec is not None else []
    if locations:
        root = Path(locations[0])
        files = tuple((f"{top}/{p.relative_to(root).as_posix()}", str(p)) for p in sorted(root.rglob("*.py"))
                      if "__pycache__" not in p.parts)
    else:
        files = ((f"{top}.py", origin),)
    return origin, files


def _literal(node: ast.AST, name: str, where: str) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError) as exc:
        raise MethodSourceError(f"{where}: {name} must be a literal (numbers, strings, lists, dicts, True/False/None), "
                                "read without running the file") from exc


def _declarations(tree: ast.Module, where: str) -> tuple[dict[str, Any], ast.FunctionDef | None]:
    """The module-level declarations and the ``run`` function of a parsed method file."""
    found: dict[str, Any] = {}
    run = None
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == "run":
            run = node
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] \
            if isinstance(node, ast.AnnAssign) and node.value is not None else []
        for target in targets:
            if isinstance(target, ast.Name) and target.id in DECLARATIONS:
                found[target.id] = _literal(node.value, target.id, where)
    return found, run


def _imports(tree: ast.Module) -> list[tuple[str, int]]:
    """(module, level) of the imports the file runs when loaded (top level, not inside ``try``)."""
    out = []
    for node in tree.body:
        if isinstance(node, ast.Import):
            out += [(alias.name, 0) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            out.append((node.module or "", node.level))
    return out


def read_method(name: str, source: dict[str, str], root: Path | None = None) -> ExternalMethod:
    """Read a declared method's source without running it; ``MethodSourceError`` says what is wrong."""
    root = Path.cwd() if root is None else root
    if not NAME.fullmatch(name):
        raise MethodSourceError(f"{name!r} is not a method name: lower-case letters, digits and _, "
                                "starting with a letter, at most 40 characters")
    if "file" in source:
        path = Path(source["file"])
        path = path if path.is_absolute() else root / path
        if path.suffix != ".py":
            raise MethodSourceError(f"{source['file']!r} is not a Python file (.py)")
        if not path.is_file():
            raise MethodSourceError(f"{source['file']!r} does not exist or is not a regular file")
        # labelled by the method's name and the file's name, not its path: the same file on another machine
        # (or moved) keeps the tuned values searched with it (a job's params still name the path)
        origin, files = str(path), ((f"{name}/{path.name}", str(path)),)
    else:
        origin, files = _module_files(source["module"])
    where = source.get("file") or source["module"]
    try:
        if Path(origin).stat().st_size > MAX_SOURCE_BYTES:
            raise MethodSourceError(f"{where}: larger than {MAX_SOURCE_BYTES} bytes; a method's file is source code")
        tree = ast.parse(Path(origin).read_bytes(), filename=origin)
    except (SyntaxError, ValueError) as exc:
        raise MethodSourceError(f"{where}: not valid Python: {exc}") from exc
    except OSError as exc:
        raise MethodSourceError(f"{where}: cannot be read: {exc.strerror or exc}") from exc
    found, run = _declarations(tree, where)
    if run is None:
        raise MethodSourceError(f"{where}: defines no function run(ctx, hp) at the top level")
    if len(run.args.posonlyargs) + len(run.args.args) < 2:
        raise MethodSourceError(f"{where}: run must take (ctx, hp); it takes "
                                f"({', '.join(a.arg for a in run.args.posonlyargs + run.args.args)})")
    version = found.get("API_VERSION")
    if version not in API_VERSIONS:
        raise MethodSourceError(f"{where}: API_VERSION = {version!r} is not one this package serves; allowed: "
                                f"{', '.join(map(str, API_VERSIONS))} (docs/method-api.md)")
    for module, level in _imports(tree):
        if level and "file" in source:
            raise MethodSourceError(f"{where}: a relative import ('from {'.' * level}{module} import ...') needs a "
                                    "package: install it and name the module with 'module:'")
        if not level and _find_spec(module.split(".")[0]) is None:
            raise MethodSourceError(f"{where}: imports {module!r}, which is not installed")
    schema = found.get("HYPERPARAMETERS", DEFAULT_HYPERPARAMETERS)
    if not isinstance(schema, dict):
        raise MethodSourceError(f"{where}: HYPERPARAMETERS must be a JSON schema (a dict); got {type(schema).__name__}")
    plugin = found.get("DA_PLUGIN", True)
    if plugin is not True and not (isinstance(plugin, str) and plugin.strip()):
        raise MethodSourceError(f"{where}: DA_PLUGIN must be True or a sentence saying why the method cannot "
                                f"take the DA term; got {plugin!r}")
    return ExternalMethod(name=name, source=dict(source), hyperparameters=schema,
                          da_plugin=None if plugin is True else plugin,
                          description=str(found.get("DESCRIPTION", f"{name}: a method of {where}")), files=files)


def _stamp(name: str, source: dict[str, str], root: Path) -> tuple:
    """What a cached reading depends on: the source and its file's version (edited files are read again)."""
    path = Path(source["file"]) if "file" in source else None
    if path is not None and not path.is_absolute():
        path = root / path
    try:
        stat = path.stat() if path is not None else None
    except OSError:
        stat = None
    return (name, json.dumps(source, sort_keys=True), str(root),
            (stat.st_mtime_ns, stat.st_size, stat.st_ino) if stat else None)


@functools.lru_cache(maxsize=256)
def _cached(stamp: tuple) -> ExternalMethod | MethodSourceError:
    name, source, root, _ = stamp
    try:
        return read_method(name, json.loads(source), Path(root))
    except MethodSourceError as exc:
        return exc


def declared_sources(config: dict) -> dict[str, dict[str, str]]:
    """``unlearn.external`` as declared: name -> {file|module: ...} (well-formed entries only)."""
    block = (config.get("unlearn") or {}).get("external") or {}
    if not isinstance(block, dict):
        return {}
    return {name: dict(src) for name, src in block.items()
            if isinstance(name, str) and isinstance(src, dict) and len(src) == 1
            and isinstance(next(iter(src.values())), str) and next(iter(src)) in ("file", "module")}


def external_methods(config: dict, root: Path | None = None) -> dict[str, ExternalMethod | MethodSourceError]:
    """Every declared method, read (cached per version of its file), or the error that refuses it."""
    root = Path.cwd() if root is None else root
    return {name: _cached(_stamp(name, src, root)) for name, src in declared_sources(config).items()}


def external_method(config: dict, name: str) -> ExternalMethod | None:
    """The declared method ``name`` (None for a built-in); raises its error if its source is unusable."""
    if name not in declared_sources(config):
        return None
    found = external_methods(config)[name]
    if isinstance(found, MethodSourceError):
        raise found
    return found


# ------------------------------------------------------------------------------ running one (a job)
def load_module(name: str, source: dict[str, str]):
    """Import the method's source (a job's process, or a count of its images: ``tools/workload.py``)."""
    if "module" in source:
        return importlib.import_module(source["module"])
    path = Path(source["file"]).resolve()
    module_name = f"unlearn_da_external_{name}"
    stat = path.stat()
    version = (str(path), stat.st_mtime_ns, stat.st_size)  # an edited file is loaded again
    loaded = sys.modules.get(module_name)
    if loaded is not None and getattr(loaded, "__unlearn_da_version__", None) == version:
        return loaded
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise MethodSourceError(f"{source['file']}: cannot be loaded as a Python module")
    module = importlib.util.module_from_spec(spec)
    module.__unlearn_da_version__ = version
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


def load_run(name: str, source: dict[str, str]):
    """The ``run`` of the method's source."""
    run = getattr(load_module(name, source), "run", None)
    if not callable(run):
        raise MethodSourceError(f"{source.get('file') or source['module']}: defines no function run(ctx, hp)")
    return run
