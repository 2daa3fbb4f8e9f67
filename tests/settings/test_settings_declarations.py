"""One declaration per setting: flags, validation, variables and the page derive from it."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from flux_pipeline.commands import config_docs
from flux_pipeline.commands.cli import build_parser
from flux_pipeline.settings import Settings, ValueObject, Variable, setting
from flux_pipeline.settings.environment import VARIABLES
from flux_pipeline.settings.flags import add_flags, from_flags

#: The emulator's flags named by the CLI contract (/work/shared/DESIGN.md) and the docs.
CONTRACT_FLAGS = [
    *("--host", "--port", "--api-key", "--workers", "--step-time", "--fault-rate"),
    *("--latency", "--retention", "--seed", "--rate-limit", "--quota-per-minute"),
    *("--quota-counts", "--quota-window", "--credits", "--output-format", "--bad-media"),
    *("--bad-media-rate", "--oversized-bytes", "--no-metrics", "--v2-only", "--status-origin"),
]


class Knobs(ValueObject):
    """A new group of settings, declared as a feature would add them."""

    blank_rate: float = setting(0.0, "share of blank images", ge=0, le=1, metavar="P")
    history_grace: float = setting(60.0, "seconds of grace", ge=0)
    dry_run: bool = setting(False, "answer nothing")


def test_the_committed_configuration_page_is_current() -> None:
    assert config_docs.PAGE.read_text() == config_docs.render(), (
        "docs/CONFIGURATION.md is out of date: run python -m flux_pipeline.commands.config_docs"
    )


def test_the_page_check_fails_on_a_stale_page_and_names_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page = tmp_path / "CONFIGURATION.md"
    assert config_docs.main(["--output", str(page)]) == 0
    assert config_docs.main(["--check", "--output", str(page)]) == 0
    page.write_text(page.read_text().replace("| `FLUX_RUN_LEASE` |", "| `FLUX_LEASE` |"))

    assert config_docs.main(["--check", "--output", str(page)]) == 1
    assert "python -m flux_pipeline.commands.config_docs" in capsys.readouterr().err


def test_the_page_lists_every_flag_and_variable() -> None:
    page = config_docs.render()
    for flag in CONTRACT_FLAGS:
        assert f"| `{flag}` |" in page, flag
    for variable in VARIABLES:
        assert f"| `{variable.name}` |" in page, variable.name


def test_the_emulator_keeps_every_contract_flag() -> None:
    emulator = build_parser()._subparsers._group_actions[0].choices["emulator"]  # type: ignore[union-attr]
    flags = {option for action in emulator._actions for option in action.option_strings}
    assert set(CONTRACT_FLAGS) <= flags


def test_a_declared_field_is_a_flag_a_validation_and_a_row() -> None:
    parser = argparse.ArgumentParser()
    add_flags(parser, Knobs)

    parsed = from_flags(Knobs, parser.parse_args(["--blank-rate", "0.25", "--dry-run"]))
    assert (parsed.blank_rate, parsed.history_grace, parsed.dry_run) == (0.25, 60.0, True)
    with pytest.raises(ValueError, match=r"^blank_rate: input should be less than or equal to 1"):
        from_flags(Knobs, parser.parse_args(["--blank-rate", "1.5"]))
    assert "share of blank images (default: 0.0)" in parser.format_help()
    assert "--blank-rate P" in parser.format_help()


def test_a_secret_field_is_never_quoted() -> None:
    class Keyed(ValueObject):
        key: str = setting("x", "the key", secret=True)

    with pytest.raises(ValueError, match=r"^key: ") as refused:
        Keyed(key=12345678)  # type: ignore[arg-type]
    assert "12345678" not in str(refused.value)
    assert "x" not in repr(Keyed()).split("(", 1)[1]


def test_unknown_settings_are_refused() -> None:
    class Open(Settings):
        size: int = setting(1, "size")

    with pytest.raises(ValueError, match="sise"):
        Open(sise=2)  # type: ignore[call-arg]


RATE: Variable[float] = Variable("FLUX_TEST_RATE", float, 0.05, "a share", ge=0, le=1)
LEASE: Variable[float] = Variable("FLUX_TEST_LEASE", float, 120.0, "x", gt=0, unit="seconds")
COUNT: Variable[int | None] = Variable("FLUX_TEST_COUNT", int, None, "a count", ge=1)


def test_a_variable_is_read_when_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLUX_TEST_RATE", raising=False)
    assert RATE.read() == 0.05
    monkeypatch.setenv("FLUX_TEST_RATE", " 0.2 ")
    assert RATE.read() == 0.2
    monkeypatch.setenv("FLUX_TEST_RATE", "")
    assert RATE.read() == 0.05
    assert COUNT.read() is None


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (RATE, "1.5", "FLUX_TEST_RATE must be a number between 0 and 1, got '1.5'"),
        (RATE, "nan", "FLUX_TEST_RATE must be a number between 0 and 1, got 'nan'"),
        (RATE, "five", "FLUX_TEST_RATE must be a number between 0 and 1, got 'five'"),
        (LEASE, "inf", "FLUX_TEST_LEASE must be a positive number of seconds, got 'inf'"),
        (COUNT, "2.5", "FLUX_TEST_COUNT must be an integer >= 1, got '2.5'"),
        (COUNT, "0", "FLUX_TEST_COUNT must be an integer >= 1, got '0'"),
    ],
)
def test_a_bad_variable_fails_naming_it(
    monkeypatch: pytest.MonkeyPatch, variable: Variable[object], value: str, message: str
) -> None:
    monkeypatch.setenv(variable.name, value)
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        variable.read()


def test_every_variable_of_the_project_is_declared_once() -> None:
    names = [variable.name for variable in VARIABLES]
    assert len(names) == len(set(names))
    assert {"SEGMIND_API_KEY", "FLUX_STORAGE_ROOT", "FLUX_RUN_LEASE"} <= set(names)
    root = Path(config_docs.__file__).resolve().parents[2]
    direct = re.compile(r"environ(?:\.get)?\(?\[?\s*\"((?:FLUX|SEGMIND)_\w+)")
    read_directly = [
        f"{path.relative_to(root)}: {name}"
        for folder in ("flux_pipeline", "assets", "resources")
        for path in (root / folder).rglob("*.py")
        for name in direct.findall(path.read_text())
    ]
    assert read_directly == [], "read these through flux_pipeline.settings.environment"
