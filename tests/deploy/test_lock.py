"""uv.lock, the one statement of every version ``make demo``, ``make test`` and CI install.

Whether the lock still matches pyproject.toml is ``uv lock --check`` (``make lint``); these
tests check what the lock pins and that the running environment is the lock's."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DAGSTER_FAMILY = {
    "dagster": "1.13.27",
    "dagster-webserver": "1.13.27",
    "dagster-graphql": "1.13.27",
    "dagster-pipes": "1.13.27",
    "dagster-shared": "1.13.27",
    "dagster-dg-cli": "1.13.27",
    "dagster-dg-core": "1.13.27",
    "dagster-postgres": "0.29.27",
    "dagster-k8s": "0.29.27",
}


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked_versions() -> dict[str, set[str]]:
    """Each package of uv.lock and its versions (several where markers fork the resolution)."""
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    versions: dict[str, set[str]] = {}
    for package in lock["package"]:
        if "version" in package:
            versions.setdefault(normalized(package["name"]), set()).add(package["version"])
    return versions


def test_the_lock_pins_the_dagster_family_on_one_release_line() -> None:
    versions = locked_versions()
    for name, version in DAGSTER_FAMILY.items():
        assert versions.get(name) == {version}, name


def test_the_lock_covers_every_extra_of_pyproject() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    (project,) = [p for p in lock["package"] if p["name"] == pyproject["name"]]
    assert project["source"] == {"editable": "."}
    assert set(project["optional-dependencies"]) == set(pyproject["optional-dependencies"])
    assert {"postgres", "k8s", "dev"} <= set(project["optional-dependencies"])


def test_the_environment_runs_the_locked_versions() -> None:
    """Every installed distribution that the lock names is at the lock's version."""
    # Every copy of the project's metadata on sys.path: `python -m pytest` also finds the
    # source tree's flux_pipeline.egg-info (no INSTALLER) before the venv's dist-info.
    installers = {
        (d.read_text("INSTALLER") or "").strip()
        for d in metadata.distributions(name="flux-pipeline")
    }
    if "uv" not in installers:
        pytest.skip("not installed by `uv sync` (make / .ci/run): pip resolves its own versions")
    versions = locked_versions()
    installed = {normalized(d.metadata["Name"]): d.version for d in metadata.distributions()}
    wrong = {
        name: (version, sorted(versions[name]))
        for name, version in installed.items()
        if name in versions and version not in versions[name]
    }
    assert not wrong, f"installed (version, locked) differ: {wrong}"
    for name, version in DAGSTER_FAMILY.items():
        if name in installed:
            assert installed[name] == version, name
    assert installed["dagster"] == DAGSTER_FAMILY["dagster"]
