"""Each stage's sources (what its command imports) are its DVC deps and its code version."""
import ast
import shutil
from pathlib import Path

import pytest
import yaml

from gani.stages.sources import (ENTRY_MODULES, PACKAGE_DIR, import_statements,
                                 imported_modules, source_versions, stage_modules,
                                 stage_sources)

ROOT = Path(__file__).resolve().parents[2]


def dvc_source_deps(stage: str) -> list[str]:
    deps = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][stage]["deps"]
    return [d for d in deps if not d.startswith("${")]


def covered(path: Path, deps: list[str]) -> bool:
    rel = path.relative_to(ROOT)
    return any(rel == Path(d) or Path(d) in rel.parents for d in deps)


@pytest.mark.parametrize("stage", sorted(ENTRY_MODULES))
def test_dvc_deps_list_every_source_the_stage_imports(stage):
    deps = dvc_source_deps(stage)
    missing = [str(p.relative_to(ROOT)) for p in stage_sources(stage) if not covered(p, deps)]
    assert not missing, f"dvc.yaml stage {stage!r} misses these deps: {missing}"
    assert [d for d in deps if not (ROOT / d).exists()] == []


def test_stage_modules_follow_their_imports():
    tune = stage_modules("tune")
    assert {"gani.stages.tune", "gani.tuning.gani", "gani.gmm", "gani.models.stylegan2",
            "gani.checkpoints.build", "gani.config.schema", "gani.stages.common",
            "gani.stages.plan", "gani.safeload"} <= tune
    align = stage_modules("align")
    assert "gani.alignment.ffhq" in align and "gani.stages.__main__" in align
    assert "gani.stages.tune" not in align and "gani.tuning" not in align


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    pkg = tmp_path / "gani"
    for rel, text in files.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    return pkg


def test_imports_resolve_relative_lazy_and_parent_packages(tmp_path):
    pkg = _package(tmp_path, {
        "__init__.py": "", "io.py": "", "b/__init__.py": "", "b/leaf.py": "",
        "c/__init__.py": "from .d import X\n", "c/d.py": "X = 1\n",
        "a/__init__.py": "", "a/x.py": ('"""Doc.\n\nfrom the paper (prose)\n"""\n'
                                        "from ..b import leaf\nfrom . import (\n    y,\n)\n"
                                        "def f():\n    import gani.c.d\n    from gani import io\n"
                                        "    import torch\n"),
        "a/y.py": "", "a/z.py": "",
    })
    found = imported_modules("gani.a.x", pkg / "a" / "x.py", pkg)
    assert found == {"gani", "gani.b", "gani.b.leaf", "gani.a", "gani.a.y", "gani.c",
                     "gani.c.d", "gani.io"}
    assert imported_modules("gani.c", pkg / "c" / "__init__.py", pkg) == {"gani", "gani.c",
                                                                         "gani.c.d"}


def test_import_lines_are_every_import_statement_of_the_package():
    for path in PACKAGE_DIR.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        want = [ast.dump(n) for n in ast.walk(ast.parse(text))
                if isinstance(n, (ast.Import, ast.ImportFrom))]
        assert sorted(ast.dump(n) for n in import_statements(text)) == sorted(want), path


def test_code_version_changes_with_the_sources_a_stage_runs_only(tmp_path):
    pkg = tmp_path / "gani"
    shutil.copytree(PACKAGE_DIR, pkg, ignore=shutil.ignore_patterns("__pycache__", "testbed"))
    before = source_versions(pkg)
    assert before == source_versions(pkg) and set(before) == set(ENTRY_MODULES)
    (pkg / "unused_module.py").write_text("X = 1\n")           # imported by no stage
    assert source_versions(pkg) == before
    tuner = pkg / "tuning" / "gani.py"
    tuner.write_text(tuner.read_text() + "\n# changed\n")
    after = source_versions(pkg)
    changed = {s for s in ENTRY_MODULES if after[s] != before[s]}
    assert changed == {"encode", "tune", "edit", "evaluate"}  # encode projects with the tuners
