"""The DVC graph is honest: every project file a stage's command can import is a dependency of
that stage in dvc.yaml, so that `dvc repro` re-runs a stage whenever code it runs has changed.

A stage's code is the import closure of its command: the `drmnet` sub-command's function (the
imports in its body and at the top of its CLI module), then every module those import, at module
level or inside functions (any function of an imported module may run). Only the project's own
packages count; the closure is a static over-approximation, which errs on the side of re-running.
"""

from __future__ import annotations

import ast
import inspect
import shlex
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("pipeline", "rendering", "models", "fileio")


def module_path(name: str) -> Path | None:
    """The file of project module ``name`` (``pipeline.samples`` → pipeline/samples.py)."""
    if name.split(".")[0] not in PACKAGES:
        return None
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(tree: ast.AST, package: str) -> set[str]:
    """Project modules named by the import statements anywhere in ``tree`` (``package``: the
    dotted package of the file, for relative imports)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)  # `from pipeline import metrics`
    modules = set()
    for name in found:
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ too
            if module_path(".".join(parts[:i])) is not None:
                modules.add(".".join(parts[:i]))
    return modules


def has_code(path: Path) -> bool:
    """Whether a module does anything beyond its docstring and ``from __future__`` imports (a
    docstring-only ``__init__.py`` cannot change what a stage produces)."""
    body = ast.parse(path.read_text()).body
    return any(
        not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))
        and not (isinstance(node, ast.ImportFrom) and node.module == "__future__")
        for node in body
    )


def closure(start: set[str]) -> set[Path]:
    """Files with code of the project modules reachable from ``start`` through imports."""
    seen: set[str] = set()
    todo = list(start)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = module_path(name)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        todo.extend(imported_modules(ast.parse(path.read_text()), package) - seen)
    return {module_path(name) for name in seen if has_code(module_path(name))}


def command_code(argv: list[str]) -> set[Path]:
    """The project files the `drmnet` command ``argv`` (e.g. ["train", "drmnet"]) can import:
    its CLI module plus the closure of the command function and that module's top level."""
    from pipeline.cli import app  # noqa: F401  (registers every command)
    from pipeline.cli.app import app as typer_app

    commands = {c.name or c.callback.__name__: c.callback for c in typer_app.registered_commands}
    assert argv[0] in commands, f"dvc.yaml runs `drmnet {argv[0]}`, which is no drmnet command"
    function = commands[argv[0]]
    module = inspect.getmodule(function)
    module_tree = ast.parse(Path(module.__file__).read_text())
    top_level = ast.Module(
        body=[n for n in module_tree.body if isinstance(n, (ast.Import, ast.ImportFrom))], type_ignores=[]
    )
    body = ast.parse(inspect.getsource(function))
    package = module.__name__.rpartition(".")[0]
    start = imported_modules(top_level, package) | imported_modules(body, package)
    start -= {"pipeline.cli", "pipeline.cli.app"}  # the CLI's plumbing, shared by every command
    return closure(start) | {Path(module.__file__)}


def stages() -> list[tuple[str, list[str], list[str]]]:
    """(name, drmnet argv, deps) per stage of dvc.yaml, ``foreach`` stages once (their deps and
    command do not depend on the item for code); interpolated deps (user data dirs) left out."""
    spec = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    out = []
    for name, stage in spec.items():
        stage = stage.get("do", stage)
        argv = shlex.split(stage["cmd"])
        assert argv[0] == "drmnet", f"stage {name}: runs {argv[0]}, not drmnet"
        deps = [d if isinstance(d, str) else next(iter(d)) for d in stage.get("deps", [])]
        out.append((name, argv[1:], [d for d in deps if "${" not in d]))
    return out


def covered(path: Path, deps: list[str]) -> bool:
    relative = path.relative_to(ROOT)
    return any(relative == Path(d) or Path(d) in relative.parents for d in deps)


@pytest.mark.parametrize("name, argv, deps", stages(), ids=[s[0] for s in stages()])
def test_every_file_a_stage_can_import_is_one_of_its_dependencies(name, argv, deps):
    missing = sorted(str(p.relative_to(ROOT)) for p in command_code(argv) if not covered(p, deps))
    assert not missing, f"dvc.yaml stage {name!r} runs code it does not depend on: {missing}"


@pytest.mark.parametrize("name, argv, deps", stages(), ids=[s[0] for s in stages()])
def test_every_code_dependency_exists(name, argv, deps):
    code = [d for d in deps if d.split("/")[0] in PACKAGES]
    assert all((ROOT / d).exists() for d in code), [d for d in code if not (ROOT / d).exists()]


def test_the_closure_follows_imports_inside_functions():
    """The CLI imports heavy modules inside command bodies: the closure must see them."""
    files = {str(p.relative_to(ROOT)) for p in command_code(["train", "drmnet"])}
    assert "pipeline/training/stage.py" in files and "models/unet.py" in files, sorted(files)
