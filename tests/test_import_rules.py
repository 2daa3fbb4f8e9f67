"""The house rules, read from the code's own imports: the core never imports Dagster, and each
stage of the data flow imports only the stages below it (``store/`` nothing above it). Outside
the core, dependencies point one way, ``assets/ -> resources/ -> core``, and Dagster's private
modules (``dagster._*``) are imported by one adapter only."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "flux_pipeline"
#: The Dagster layer, installed as ``flux_pipeline.assets`` and ``flux_pipeline.resources``.
ASSETS = ROOT / "assets"
RESOURCES = ROOT / "resources"
#: The one module of the package that may use Dagster's private API (``dagster._*``).
DAGSTER_ADAPTER = ASSETS / "dagster_internals.py"
#: The stages, bottom up: a module may import its own stage and the stages of lower rank.
RANK = {
    "settings": 0,
    "protocol": 0,
    "native_memory": 0,
    "store": 1,
    "prompts": 2,
    "segmind": 2,
    "emulator": 2,
    "quality": 2,
    "builder": 3,
    "dataset": 4,
    "report": 4,
    "reconcile": 4,
    "commands": 5,
}
#: Imports made inside a function, on purpose: the commands that run the job or read a backfill
#: reach the Dagster layer (``assets``) only when they run.
LAZY_UPWARD = {
    ("commands/demo.py", "flux_pipeline.assets.demo_run"),
    ("commands/plan.py", "flux_pipeline.assets.backfill_partitions"),
}


def _stage(module: str) -> str:
    """``flux_pipeline.store.ledger`` -> ``store``; ``flux_pipeline.protocol`` -> ``protocol``."""
    return module.split(".")[1]


def _imports(path: Path) -> Iterator[tuple[str, bool]]:
    """``(module, at top level)`` of each ``import`` in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    top = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((alias.name, id(node) in top) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names]
            if node.module == "flux_pipeline":  # from flux_pipeline import protocol
                yield from ((name, id(node) in top) for name in names)
            else:
                yield node.module, id(node) in top


def _core_files() -> list[Path]:
    """Every module of the core but ``definitions.py``, the assembly that imports it all."""
    return sorted(
        p
        for p in CORE.rglob("*.py")
        if p.name != "definitions.py" and (p.name != "__init__.py" or p.parent != CORE)
    )


def test_the_core_never_imports_dagster() -> None:
    offenders = [
        f"{path.relative_to(CORE)} imports {module}"
        for path in _core_files()
        for module, _ in _imports(path)
        if module.split(".")[0] in ("dagster", "dagster_postgres", "dagster_k8s")
    ]
    assert offenders == []


@pytest.mark.parametrize("path", _core_files(), ids=lambda p: str(p.relative_to(CORE)))
def test_each_stage_imports_only_the_stages_below_it(path: Path) -> None:
    relative = path.relative_to(CORE).as_posix()
    own = relative.split("/")[0].removesuffix(".py")
    assert own in RANK, f"{relative} stands in no stage: add it to a package of its stage"
    wrong = []
    for module, at_top in _imports(path):
        if not module.startswith("flux_pipeline.") or _stage(module) == own:
            continue
        target = _stage(module)
        if (relative, module) in LAZY_UPWARD and not at_top:
            continue
        if target not in RANK or RANK[target] >= RANK[own]:
            wrong.append(module)
    assert wrong == [], f"{relative} imports {wrong}: an arrow up or sideways"


def test_the_store_imports_nothing_above_it() -> None:
    imported = {
        module
        for path in (CORE / "store").glob("*.py")
        for module, _ in _imports(path)
        if module.startswith("flux_pipeline.")
    }
    assert {_stage(m) for m in imported} <= {"store", "protocol", "settings"}


#: Test folders that are not a stage: the Dagster layer, whole-system suites, shared helpers.
SUITES = {"dagster", "daemon", "deploy", "postgres", "reliability", "support"}
TESTS = Path(__file__).resolve().parent


def test_test_folders_mirror_the_stages() -> None:
    """A test goes in the folder of the stage it tests (``tests/<stage>/``) or of a suite."""
    folders = {p.name for p in TESTS.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert folders - set(RANK) - SUITES == set()


def test_tests_and_benchmarks_reach_helpers_as_packages_not_through_sys_path() -> None:
    """Helpers live in packages (``tests.support``, ``bench``); nothing edits ``sys.path``."""
    sources = [*TESTS.rglob("*.py"), *(TESTS.parent / "bench").rglob("*.py")]
    edits = [
        str(path.relative_to(TESTS.parent))
        for path in sources
        if any(
            isinstance(node, ast.Attribute)
            and node.attr == "path"
            and isinstance(node.value, ast.Name)
            and node.value.id == "sys"
            for node in ast.walk(ast.parse(path.read_text()))
        )
    ]
    assert edits == []


def _package_files() -> list[Path]:
    return sorted([*CORE.rglob("*.py"), *ASSETS.rglob("*.py"), *RESOURCES.rglob("*.py")])


def test_resources_never_import_assets() -> None:
    offenders = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in sorted(RESOURCES.rglob("*.py"))
        for module, _ in _imports(path)
        if module == "flux_pipeline.assets" or module.startswith("flux_pipeline.assets.")
    ]
    assert offenders == []


def test_the_core_imports_neither_assets_nor_resources() -> None:
    """Only ``definitions.py`` assembles them, and the two commands that reach the Dagster layer
    do so inside a function (``LAZY_UPWARD``)."""
    offenders = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in _core_files()
        for module, at_top in _imports(path)
        if module.startswith("flux_pipeline.")
        and _stage(module) in ("assets", "resources")
        and not ((path.relative_to(CORE).as_posix(), module) in LAZY_UPWARD and not at_top)
    ]
    assert offenders == []


def test_dagster_s_private_api_is_used_by_one_adapter() -> None:
    offenders = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in _package_files()
        if path != DAGSTER_ADAPTER
        for module, _ in _imports(path)
        if module.split(".")[0] in ("dagster", "dagster_postgres", "dagster_k8s")
        and any(part.startswith("_") for part in module.split(".")[1:])
    ]
    assert offenders == []
