"""The import graph's rules: arrows run down from the CLI (cli/) to the flows, the tasks, the
MLflow client (tracking/) and the library (gani/), never back up; the benchmarks and tests sit
beside the product and nothing in it imports them. RULES below lists each rule and its reason.

Every import of every module counts: top-level, inside functions (lazy imports), relative
ones (resolved against the module's package), `from pkg import submodule`, and
`importlib.import_module("...")` / `__import__("...")` with a literal name.
"""
from __future__ import annotations

import ast
import os
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]

# (importing modules, forbidden targets, why). A module matches a prefix when it is the
# prefix or lies below it ("gani.models" matches gani/models/*.py, not gani/models_x.py).
RULES: list[tuple[str, tuple[str, ...], str]] = [
    ("gani", ("flows", "tasks", "tracking", "cli", "benchmarks"),
     "the library does not reach up into orchestration, the CLI or the benchmarks"),
    ("gani.models", ("gani.checkpoints",),
     "checkpoints load into models, never the other way"),
    ("tracking", ("prefect", "flows", "tasks", "cli"),
     "the MLflow client knows nothing of Prefect or the layers above it"),
    ("tasks", ("flows", "cli"), "tasks do not know the flows that run them"),
    ("flows", ("cli",), "flows do not know the CLI that starts them"),
]
# nothing outside tests/ imports the tests
OUTSIDE_TESTS = ("tests", "product code does not depend on the tests")

# not the project's code: at the top level only (a gani/build/ package would be scanned)
SKIP_TOP = {"node_modules", "build", "dist", "outputs", "shared"}


class Violation(NamedTuple):
    path: str       # relative to the scanned root
    line: int
    imported: str
    why: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: imports {self.imported} ({self.why})"


def _under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _package(path: Path, root: Path) -> list[str]:
    name = module_name(path, root).split(".")
    return name if path.name == "__init__.py" else name[:-1]


def imported_modules(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, dotted name) of everything the file imports; `from a import b` yields both
    `a` and `a.b` (b may be a submodule)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                pkg = _package(path, root)
                base = pkg[:len(pkg) - (node.level - 1)] if node.level > 1 else pkg
                base_name = ".".join(base + ([node.module] if node.module else []))
            else:
                base_name = node.module or ""
            if base_name:
                found.append((node.lineno, base_name))
            found += [(node.lineno, f"{base_name}.{alias.name}".lstrip("."))
                      for alias in node.names if alias.name != "*"]
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            called = (func.attr if isinstance(func, ast.Attribute)
                      else func.id if isinstance(func, ast.Name) else None)
            arg = node.args[0]
            if called in ("import_module", "__import__") and isinstance(arg, ast.Constant) \
                    and isinstance(arg.value, str):
                found.append((node.lineno, arg.value))
    return found


def python_files(root: Path) -> list[Path]:
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        top = Path(dirpath) == root
        dirnames[:] = sorted(d for d in dirnames
                             if not d.startswith(".") and d != "__pycache__"
                             and not d.endswith(".egg-info") and not (top and d in SKIP_TOP))
        files += [Path(dirpath) / f for f in sorted(filenames) if f.endswith(".py")]
    return files


def violations(root: Path) -> list[Violation]:
    out = []
    for path in python_files(root):
        source = module_name(path, root)
        rel = path.relative_to(root).as_posix()
        rules = [(src, targets, why) for src, targets, why in RULES if _under(source, src)]
        if not _under(source, "tests"):
            rules.append((source, (OUTSIDE_TESTS[0],), OUTSIDE_TESTS[1]))
        seen = set()
        for line, imported in imported_modules(path, root):
            for _, targets, why in rules:
                hit = next((t for t in targets if _under(imported, t)), None)
                if hit and (line, hit) not in seen:
                    seen.add((line, hit))
                    out.append(Violation(rel, line, imported, why))
    return out


# ---------------------------------------------------------------- the repository
def test_the_repository_keeps_the_import_rules():
    scanned = {module_name(p, ROOT) for p in python_files(ROOT)}
    assert {"gani", "gani.tuning", "tasks", "flows", "benchmarks.testbed.judge"} <= scanned
    found = violations(ROOT)
    assert not found, "imports that break the layering:\n" + "\n".join(map(str, found))


# ---------------------------------------------------------------- the checker itself
def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


def test_checker_reports_every_forbidden_arrow_with_file_and_line(tmp_path):
    root = _tree(tmp_path, {
        "gani/__init__.py": "",
        "gani/cli.py": "import os\nfrom flows.invert import run\n",
        "gani/lazy.py": "def f():\n    import tasks.pipeline\n    return 1\n",
        "gani/bench.py": "from benchmarks.testbed import judge\n",
        "gani/track.py": "import tracking\n",
        "gani/top.py": "from cli import main\n",
        "gani/models/__init__.py": "",
        "gani/models/load.py": ("def load():\n"
                                "    from ..checkpoints import io\n"
                                "    from gani import checkpoints\n"
                                "    import gani.checkpoints.layout\n"),
        "gani/models/dyn.py": ("import importlib\n"
                               "importlib.import_module('gani.checkpoints')\n"),
        "tracking/client.py": ("import mlflow\n\n\n"
                               "def f():\n    from prefect import get_run_logger\n"),
        "tracking/up.py": "from tasks import x\nimport flows\nfrom cli.main import run\n",
        "tasks/t.py": "from flows import invert\nfrom cli import main\n",
        "flows/f.py": "import cli.main\n",
        "benchmarks/b.py": "from tests.tiny_generator import TinyGenerator\n",
        "flows/g.py": "from tests import conftest\n",
    })
    got = {(v.path, v.line, v.imported) for v in violations(root)}
    assert got == {
        ("gani/cli.py", 2, "flows.invert"),
        ("gani/lazy.py", 2, "tasks.pipeline"),
        ("gani/bench.py", 1, "benchmarks.testbed"),
        ("gani/track.py", 1, "tracking"),
        ("gani/top.py", 1, "cli"),
        ("gani/models/load.py", 2, "gani.checkpoints"),
        ("gani/models/load.py", 3, "gani.checkpoints"),
        ("gani/models/load.py", 4, "gani.checkpoints.layout"),
        ("gani/models/dyn.py", 2, "gani.checkpoints"),
        ("tracking/client.py", 5, "prefect"),
        ("tracking/up.py", 1, "tasks"),
        ("tracking/up.py", 2, "flows"),
        ("tracking/up.py", 3, "cli.main"),
        ("tasks/t.py", 1, "flows"),
        ("tasks/t.py", 2, "cli"),
        ("flows/f.py", 1, "cli.main"),
        ("benchmarks/b.py", 1, "tests.tiny_generator"),
        ("flows/g.py", 1, "tests"),
    }
    first = next(v for v in violations(root) if v.path == "gani/cli.py")
    assert str(first) == ("gani/cli.py:2: imports flows.invert (the library does not reach up "
                          "into orchestration, the CLI or the benchmarks)")


def test_checker_allows_the_downward_arrows(tmp_path):
    root = _tree(tmp_path, {
        "gani/__init__.py": "",
        "gani/checkpoints/__init__.py": "from ..models import Generator\nfrom gani import models\n",
        "gani/models/__init__.py": "from .stylegan2 import Generator\nfrom gani.io import x\n",
        "gani/flowsy.py": "import flows_helper\nfrom gani import clients\n",
        "tracking/client.py": "import mlflow\nfrom gani.io import write_json\n",
        "tasks/t.py": "import prefect\nimport tracking\nfrom gani import stages\n",
        "flows/f.py": "from tasks import t\nimport tracking\nimport prefect\n",
        "cli/main.py": "from flows import f\nimport tasks\nimport gani\n",
        "benchmarks/testbed/judge.py": "from benchmarks.quality import run\nimport gani\n",
        "tests/test_x.py": "from tests.tiny_generator import T\nimport cli, flows\n",
        # not scanned (each would break the tests rule if it were)
        ".venv/lib/site.py": "import tests\n",
        "gani/__pycache__/bad.py": "import tests\n",
        "outputs/run.py": "import tests\n",
        "pkg.egg-info/x.py": "import tests\n",
    })
    assert violations(root) == []
