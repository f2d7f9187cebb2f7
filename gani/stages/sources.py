"""Which source files each stage runs, and their hash: the code version in the cache keys.

A stage's sources are the modules of the `gani` package that its entry module imports,
followed transitively: every `import` statement of a module counts (those inside functions
too), and importing `gani.a.b` also runs `gani/__init__.py` and `gani/a/__init__.py`. The
drivers that dispatch to every stage (`gani/stages/__init__.py`, `__main__.py`, `run.py`)
belong to each stage, but their imports of the other stages' entry modules are not followed:
only the chosen stage's code runs.

`code_versions()` hashes each stage's files once per process (the code a process runs is the
code it imported), so a changed tuner makes the next run recompute tune and what follows
(gani/stages/plan.py), and dvc.yaml lists the same files as each stage's deps (checked by
tests/pipeline/test_stage_sources.py).
"""
from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path
from typing import Iterable, Iterator, Optional

PACKAGE_DIR = Path(__file__).resolve().parents[1]    # .../gani
PACKAGE = PACKAGE_DIR.name

ENTRY_MODULES: dict[str, str] = {
    "demo_data": "gani.stages.demo_data",
    "align": "gani.stages.align",
    "encode": "gani.stages.encode",
    "tune": "gani.stages.tune",
    "edit": "gani.stages.edit",
    "evaluate": "gani.stages.evaluate",
}
DRIVERS = ("gani.stages", "gani.stages.__main__", "gani.stages.run")


def module_file(module: str, package_dir: Path = PACKAGE_DIR) -> Optional[Path]:
    """gani.a.b -> <package_dir>/a/b.py or <package_dir>/a/b/__init__.py, None if neither."""
    parts = module.split(".")[1:]
    base = package_dir.joinpath(*parts)
    for path in (base.with_suffix(".py") if parts else None, base / "__init__.py"):
        if path is not None and path.is_file():
            return path
    return None


def _with_parents(module: str) -> list[str]:
    """gani.a.b -> [gani, gani.a, gani.a.b]: importing a module runs its packages first."""
    parts = module.split(".")
    return [".".join(parts[:n]) for n in range(1, len(parts) + 1)]


def _base(module: str, path: Path, level: int) -> str:
    """The package a relative import of `level` dots in `module` (file `path`) starts from."""
    parts = module.split(".")
    if path.name != "__init__.py":
        parts = parts[:-1]
    return ".".join(parts[:len(parts) - (level - 1)])


def import_statements(source: str) -> Iterator[ast.stmt]:
    """Every import statement of a source file, at any indentation (lazy imports too).

    Only the lines that start an import are parsed (with their parenthesised or
    backslash-continued lines): a tenth of the time of parsing whole files. A docstring line
    that reads like an import counts too, which can only add a file to a stage."""
    lines = source.splitlines()
    i = 0
    while i < len(lines):
        chunk = [lines[i].strip()]
        if chunk[0].startswith(("import ", "from ")):
            depth = chunk[0].count("(") - chunk[0].count(")")
            while (depth > 0 or chunk[-1].endswith("\\")) and i + 1 < len(lines):
                i += 1
                chunk.append(lines[i].strip())
                depth += chunk[-1].count("(") - chunk[-1].count(")")
            try:
                yield from ast.parse("\n".join(chunk)).body
            except SyntaxError:  # prose that starts with "from " or "import "
                pass
        i += 1


def imported_modules(module: str, path: Path, package_dir: Path = PACKAGE_DIR) -> set[str]:
    """The modules of the package that `module`'s source imports anywhere in the file."""
    found: set[str] = set()
    for node in import_statements(path.read_text(encoding="utf-8")):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _base(module, path, node.level) if node.level else ""
            target = ".".join(p for p in (base, node.module or "") if p)
            found.add(target)
            found.update(f"{target}.{a.name}" for a in node.names)
    ours = {m for m in found if m == PACKAGE or m.startswith(PACKAGE + ".")}
    return {p for m in ours for p in _with_parents(m) if module_file(p, package_dir)}


class ImportGraph:
    """The package's modules and what each imports, each file parsed once."""

    def __init__(self, package_dir: Path = PACKAGE_DIR):
        self.package_dir = package_dir
        self._edges: dict[str, set[str]] = {}

    def file(self, module: str) -> Path:
        return module_file(module, self.package_dir)

    def imports(self, module: str) -> set[str]:
        if module not in self._edges:
            self._edges[module] = imported_modules(module, self.file(module), self.package_dir)
        return self._edges[module]


def stage_modules(stage: str, graph: Optional[ImportGraph] = None) -> set[str]:
    """Every package module the stage's command runs (see the module doc)."""
    graph = graph or ImportGraph()
    entry = ENTRY_MODULES[stage]
    others = set(ENTRY_MODULES.values()) - {entry}
    todo = list(DRIVERS) + _with_parents(entry)
    seen: set[str] = set()
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        found = set(graph.imports(module))
        if module in DRIVERS:
            found -= others
        todo.extend(found - seen)
    return seen


def stage_sources(stage: str, graph: Optional[ImportGraph] = None) -> list[Path]:
    """The stage's source files, sorted."""
    graph = graph or ImportGraph()
    return sorted(graph.file(m) for m in stage_modules(stage, graph))


def files_hash(paths: Iterable[Path], root: Path) -> str:
    """sha256 over (path relative to root, bytes) of each file, in sorted order."""
    h = hashlib.sha256()
    for path in sorted(paths):
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def source_versions(package_dir: Path = PACKAGE_DIR) -> dict[str, str]:
    """{stage: hash of its source files} for the package in `package_dir`."""
    graph = ImportGraph(package_dir)
    return {stage: files_hash(stage_sources(stage, graph), package_dir)
            for stage in ENTRY_MODULES}


@functools.lru_cache(maxsize=None)
def _versions() -> dict[str, str]:
    return source_versions()


def code_version(stage: str) -> str:
    """Hash of the stage's source files; all stages are hashed once per process."""
    return _versions()[stage]
