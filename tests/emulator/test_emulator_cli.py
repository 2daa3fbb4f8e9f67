"""``flux-pipeline emulator`` as a real subprocess, and the settings it validates."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from flux_pipeline.commands.cli import main
from flux_pipeline.emulator import EmulatorSettings
from tests.support.emulator_http import emulator_process

SECRET = "SG_feedfacecafebeef"


def test_cli_serves_healthz_and_never_prints_the_key(tmp_path: Path) -> None:
    log = tmp_path / "emulator.log"
    flags = ["--api-key", SECRET, "--api-key", "SG_second", "--workers", "2"]
    flags += ["--step-time", "0.001", "--fault-rate", "0", "--latency", "0.05"]
    flags += ["--retention", "60", "--seed", "3", "--output-format", "png"]
    with emulator_process(log, *flags) as base:
        health = httpx.get(f"{base}/healthz")
        accepted = httpx.post(
            f"{base}/v1/fast-flux-schnell",
            json={"prompt": "x"},
            headers={"x-api-key": "SG_second"},
        )
        refused = httpx.post(
            f"{base}/v1/fast-flux-schnell", json={"prompt": "x"}, headers={"x-api-key": "nope"}
        )
        slow = httpx.get(f"{base}/_emulator/stats").json()["slow"]

    assert health.json() == {"status": "ok"}
    assert accepted.headers["content-type"] == "image/png"
    assert refused.status_code == 401
    assert slow["answers"] == 2  # --latency: both API answers were sent late
    assert 0 < slow["seconds"] <= 2 * 0.05
    output = log.read_text()
    assert "SYNTHETIC" in output
    assert SECRET not in output
    assert "SG_second" not in output


@pytest.mark.parametrize("value", ["-1", "nan"])
def test_cli_refuses_a_bad_latency_before_serving(value: str) -> None:
    with pytest.raises(SystemExit, match=r"^flux-pipeline emulator: latency:"):
        main(["emulator", "--port", "0", "--latency", value])


def test_cli_rejects_bad_settings_naming_the_option() -> None:
    command = Path(sys.executable).with_name("flux-pipeline")

    result = subprocess.run(
        [str(command), "emulator", "--fault-rate", "2"], capture_output=True, text=True, check=False
    )

    assert result.returncode != 0
    assert "fault_rate" in result.stderr


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"workers": 0}, "workers"),
        ({"step_time": -1}, "step_time"),
        ({"fault_rate": 1.5}, "fault_rate"),
        ({"latency": -0.1}, "latency"),
        ({"latency": float("inf")}, "latency"),
        ({"retention": 0}, "retention"),
        ({"rate_limit": 0}, "rate_limit"),
        ({"credits": -1}, "credits"),
        ({"output_format": "gif"}, "output_format"),
        ({"api_keys": "SG_one"}, "api_keys"),
        ({"api_keys": ("",)}, "api_keys"),
    ],
)
def test_settings_validate_each_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field}:"):
        EmulatorSettings(**changes)  # type: ignore[arg-type]


def test_settings_repr_hides_the_keys() -> None:
    assert SECRET not in repr(EmulatorSettings(api_keys=(SECRET,)))
