"""Which of the user's modules a job needs: static import analysis, as PiCloud's client did.

Seeds are the modules the pickler referenced (functions and classes pickled
by reference, module objects). From each seed the source is scanned for
``import`` statements, recursively, parent packages included; only *user*
modules are followed (the standard library, installed packages and cloudsim
itself are on the server already). What static analysis cannot see is not
shipped, exactly as on the cloud: modules reached only through
``__import__``/``importlib.import_module`` (``dynamic-import``) and the user's
own compiled extensions (``c-extensions``).

The scan is a line-oriented pass over the source text, not a full parse, so a
200-module project is analysed in a few tens of milliseconds; results are
cached per file (keyed by mtime and size) and per seed set.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import re
import site
import sys
import sysconfig
import threading
from dataclasses import dataclass, field
from typing import Dict, FrozenSet, Iterable, List, Optional, Set, Tuple

_FROM = re.compile(r"^[ \t]*from[ \t]+([.\w]+)[ \t]+import[ \t]+(\([^)]*\)|[^\n#;]+)", re.MULTILINE)
_IMPORT = re.compile(r"^[ \t]*import[ \t]+([^\n#;]+)", re.MULTILINE)
_DYNAMIC = re.compile(r"(\b__import__|\bimport_module)\(\s*(?:(['\"])([\w.]+)\2)?")
_EXTENSION_SUFFIXES = tuple(importlib.machinery.EXTENSION_SUFFIXES)


@dataclass(frozen=True)
class DynamicImport:
    """An ``__import__``/``import_module`` call found in user code."""

    path: str
    line: int
    target: Optional[str]  # the module name when it is a string literal

    def where(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass
class ModuleInfo:
    """One user module the client could ship."""

    name: str
    path: str
    relpath: str  # where it goes in the flat directory, e.g. 'pkg/sub.py'
    is_package: bool
    kind: str  # 'source' or 'extension'
    imports: Tuple[str, ...] = ()
    dynamic: Tuple[DynamicImport, ...] = ()


@dataclass
class Closure:
    """Everything a set of seeds needs: modules in dependency order, and what cannot be shipped."""

    modules: List[ModuleInfo] = field(default_factory=list)
    extensions: List[ModuleInfo] = field(default_factory=list)
    dynamic: List[DynamicImport] = field(default_factory=list)

    @property
    def names(self) -> List[str]:
        return [m.name for m in self.modules]


def installed_roots() -> Tuple[str, ...]:
    """Directories of installed code: the standard library and site-packages (plus the server's path)."""
    roots = set()
    if os.environ.get("CLOUDSIM__SERVER"):
        module_dir = os.path.realpath(os.environ.get("CLOUDSIM__MODULE_DIR", ""))
        roots.update(os.path.realpath(p) for p in sys.path if p and os.path.realpath(p) != module_dir)
        return tuple(sorted(roots))
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        path = sysconfig.get_paths().get(key)
        if path:
            roots.add(os.path.realpath(path))
    try:
        roots.update(os.path.realpath(p) for p in site.getsitepackages())
    except AttributeError:  # pragma: no cover - old virtualenv site.py
        pass
    user_site = getattr(site, "USER_SITE", None)
    if user_site and site.ENABLE_USER_SITE:
        roots.add(os.path.realpath(user_site))
    return tuple(sorted(roots))


_CLOUDSIM_HOME = os.path.realpath(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


class Analyzer:
    """Finds the user modules behind a set of seeds; thread-safe, cached."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._roots: Optional[Tuple[str, ...]] = None
        # module name -> True when it is user code (the one policy: does it travel?)
        self._user: Dict[str, bool] = {}
        # file path -> ((mtime_ns, size), imports, dynamic sites)
        self._scans: Dict[str, Tuple[Tuple[int, int], Tuple[str, ...], Tuple[DynamicImport, ...]]] = {}
        # frozenset of seeds -> Closure
        self._closures: Dict[FrozenSet[str], Closure] = {}
        # module name -> ModuleInfo or None when not a user module
        self._infos: Dict[str, Optional[ModuleInfo]] = {}

    # ---- the policy -----------------------------------------------------
    def is_user_module(self, name: Optional[str]) -> bool:
        """True for modules of the user's own code: not standard library, installed, or cloudsim."""
        if not name or name == "__main__" or name.startswith("cloudsim") or name.startswith("pytest_cloudsim"):
            return False
        cached = self._user.get(name)
        if cached is not None:
            return cached
        module = sys.modules.get(name)
        path = getattr(module, "__file__", None) if module is not None else None
        if path is None:
            spec = None
            if module is None:
                try:
                    spec = importlib.util.find_spec(name)
                except (ImportError, ValueError, AttributeError):
                    spec = None
            path = spec.origin if spec is not None and spec.has_location else None
        answer = bool(path) and self._is_user_path(path)  # type: ignore[arg-type]
        self._user[name] = answer
        return answer

    def _is_user_path(self, path: str) -> bool:
        if self._roots is None:
            self._roots = installed_roots()
        real = os.path.realpath(path)
        if real.startswith(_CLOUDSIM_HOME + os.sep + "cloudsim" + os.sep):
            return False
        return not any(real == r or real.startswith(r + os.sep) for r in self._roots)

    # ---- single modules -------------------------------------------------
    def info(self, name: str) -> Optional[ModuleInfo]:
        """What the client knows of a user module, or None for installed / unknown modules."""
        if name in self._infos:
            return self._infos[name]
        result = None
        if self.is_user_module(name):
            result = self._make_info(name)
        self._infos[name] = result
        return result

    def _make_info(self, name: str) -> Optional[ModuleInfo]:
        module = sys.modules.get(name)
        path = getattr(module, "__file__", None) if module is not None else None
        is_package = bool(getattr(module, "__path__", None)) if module is not None else False
        if path is None:
            try:
                spec = importlib.util.find_spec(name)
            except (ImportError, ValueError, AttributeError):
                return None
            if spec is None or not spec.has_location or not spec.origin:
                return None
            path, is_package = spec.origin, spec.submodule_search_locations is not None
        path = os.path.realpath(path)
        parts = name.split(".")
        if is_package:
            relpath = os.path.join(*parts, os.path.basename(path))
        else:
            relpath = os.path.join(*parts[:-1], os.path.basename(path)) if len(parts) > 1 else os.path.basename(path)
        if path.endswith(_EXTENSION_SUFFIXES):
            return ModuleInfo(name, path, relpath, is_package, "extension")
        if not path.endswith(".py"):
            return None
        imports, dynamic = self._scan(path, name, is_package)
        return ModuleInfo(name, path, relpath, is_package, "source", imports, dynamic)

    def _scan(self, path: str, name: str, is_package: bool) -> Tuple[Tuple[str, ...], Tuple[DynamicImport, ...]]:
        try:
            st = os.stat(path)
        except OSError:
            return (), ()
        stamp = (st.st_mtime_ns, st.st_size)
        cached = self._scans.get(path)
        if cached is not None and cached[0] == stamp:
            return cached[1], cached[2]
        try:
            with open(path, "rb") as f:
                text = f.read().decode("utf-8", "replace")
        except OSError:
            return (), ()
        package = name if is_package else name.rpartition(".")[0]
        found: List[str] = []
        for match in _IMPORT.finditer(text):
            for part in match.group(1).split(","):
                mod = part.strip().split(" as ")[0].strip()
                if mod and all(p.isidentifier() for p in mod.split(".")):
                    found.append(mod)
        for match in _FROM.finditer(text):
            base = _resolve_relative(match.group(1), package)
            if base is None:
                continue
            found.append(base)
            names = match.group(2).strip().strip("()")
            for part in names.replace("\n", " ").split(","):
                sub = part.strip().split(" as ")[0].strip()
                if sub and sub != "*" and sub.isidentifier():
                    found.append(f"{base}.{sub}")  # maybe a submodule; kept only if it resolves to one
        dynamic = _dynamic_imports(path, text) if _DYNAMIC.search(text) else []
        result = (tuple(dict.fromkeys(found)), tuple(dynamic))
        self._scans[path] = (stamp, result[0], result[1])
        return result

    # ---- closures -------------------------------------------------------
    def closure(self, seeds: Iterable[str]) -> Closure:
        """The user modules the seeds need (parents before children), cached per seed set."""
        key = frozenset(s for s in seeds if s)
        with self._lock:
            cached = self._closures.get(key)
            if cached is not None:
                return cached
            out = Closure()
            seen: Set[str] = set()
            order: List[ModuleInfo] = []

            def visit(name: str) -> None:
                if name in seen:
                    return
                seen.add(name)
                parent = name.rpartition(".")[0]
                if parent:
                    visit(parent)
                info = self.info(name)
                if info is None:
                    return
                if info.kind == "extension":
                    out.extensions.append(info)
                    return
                order.append(info)
                out.dynamic.extend(info.dynamic)
                for dep in info.imports:
                    visit(dep)

            for seed in sorted(key):
                visit(seed)
            out.modules = order
            self._closures[key] = out
            return out

    def forget(self) -> None:
        """Drop every cache (tests, or a project that changed its layout)."""
        with self._lock:
            self._roots = None
            self._user.clear()
            self._scans.clear()
            self._closures.clear()
            self._infos.clear()


def _dynamic_imports(path: str, text: str) -> List[DynamicImport]:
    """``__import__(...)``/``import_module(...)`` calls in code (not in strings or comments), with a literal target."""
    import io
    import tokenize

    found: List[DynamicImport] = []
    try:
        tokens = [t for t in tokenize.generate_tokens(io.StringIO(text).readline)
                  if t.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT)]
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return found
    for i, tok in enumerate(tokens[:-1]):
        if tok.type != tokenize.NAME or tok.string not in ("__import__", "import_module"):
            continue
        if tokens[i + 1].string != "(":
            continue
        target = None
        if i + 3 < len(tokens) and tokens[i + 2].type == tokenize.STRING and tokens[i + 3].string in (")", ","):
            literal = tokens[i + 2].string
            if literal[:1] in "'\"" and literal[-1:] == literal[:1]:
                inner = literal.strip("'\"")
                if inner and all(part.isidentifier() for part in inner.split(".")):
                    target = inner
        found.append(DynamicImport(path, tok.start[0], target))
    return found


def _resolve_relative(target: str, package: str) -> Optional[str]:
    if not target.startswith("."):
        return target
    level = len(target) - len(target.lstrip("."))
    rest = target[level:]
    base_parts = package.split(".") if package else []
    if level - 1 > len(base_parts):
        return None
    base = base_parts[: len(base_parts) - (level - 1)]
    name = ".".join(base + ([rest] if rest else []))
    return name or None


ANALYZER = Analyzer()
