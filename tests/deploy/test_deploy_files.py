"""Every file of ``deploy/``, parsed and checked where no Docker or Kubernetes exists to run it:
the services, the variables each one needs, and one code location name and module throughout.

What Docker or Kubernetes would do with these files (build the image, pull ``postgres:16`` and
MinIO, install the chart) is validated only on paper; ``deploy/README.md`` says so."""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.support import forked_cli
from tests.support.helm_schema import HELM_VALUES_SUBSET

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
PG_VARIABLES = {
    "DAGSTER_PG_HOST",
    "DAGSTER_PG_PORT",
    "DAGSTER_PG_USERNAME",
    "DAGSTER_PG_PASSWORD",
    "DAGSTER_PG_DB",
}
DAGSTER_SERVICES = ("code", "webserver", "daemon")


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def python_module_location() -> dict[str, str]:
    """The one code location of the repository's workspace.yaml."""
    (entry,) = load_yaml(REPO / "workspace.yaml")["load_from"]
    location: dict[str, str] = entry["python_module"]
    return location


def dockerfile_instructions() -> list[tuple[str, str]]:
    """``(INSTRUCTION, arguments)`` of deploy/Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", (DEPLOY / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    found = []
    for line in lines:
        if line and not line.startswith("#"):
            instruction, _, arguments = line.partition(" ")
            found.append((instruction.upper(), arguments.strip()))
    return found


def dockerfile(instruction: str) -> list[str]:
    return [arguments for name, arguments in dockerfile_instructions() if name == instruction]


def image_command() -> list[str]:
    (command,) = dockerfile("CMD")
    parsed: list[str] = json.loads(command)  # exec form: no shell between Docker and dagster
    return parsed


def option(command: list[str], *names: str) -> str:
    for index, word in enumerate(command):
        if word in names:
            return command[index + 1]
    raise AssertionError(f"{names} not in {command}")


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = load_yaml(DEPLOY / "docker-compose.yaml")
    return loaded


def referenced_variable(value: str) -> str:
    """``NAME`` of a compose value ``${NAME}``, ``${NAME:-default}`` or ``${NAME:?message}``."""
    match = re.fullmatch(r"\$\{([A-Z0-9_]+)(?::[-?][^}]*)?\}", value)
    assert match, f"{value!r} is not a reference to a variable"
    return match.group(1)


def test_the_image_serves_the_module_workspace_yaml_loads() -> None:
    command = image_command()
    assert command[:3] == ["dagster", "code-server", "start"]
    assert option(command, "-m", "--module-name") == python_module_location()["module_name"]
    assert option(command, "-h", "--host") == "0.0.0.0"
    assert dockerfile("EXPOSE") == [option(command, "-p", "--port")]


def test_the_image_installs_uv_lock_with_its_extras_and_the_deploy_dagster_yaml() -> None:
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    syncs = [shlex.split(run) for run in dockerfile("RUN") if run.startswith("uv sync")]
    assert syncs, "the image installs with `uv sync` from uv.lock"
    assert not [run for run in dockerfile("RUN") if "pip install" in run and "uv==" not in run]
    for sync in syncs:
        assert "--frozen" in sync  # uv.lock as committed, never re-resolved
        assert {sync[i + 1] for i, word in enumerate(sync) if word == "--extra"} == {
            "postgres",
            "k8s",
        }
    assert "--no-editable" in syncs[-1]  # the package itself, last, as an installed copy
    # The image writes no bytecode (PYTHONDONTWRITEBYTECODE), so uv compiles it at install.
    env = dict(pair.split("=", 1) for line in dockerfile("ENV") for pair in shlex.split(line))
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["UV_COMPILE_BYTECODE"] == "1"
    assert any(
        copy.split()[:-1] == ["pyproject.toml", "uv.lock", "README.md"]
        for copy in dockerfile("COPY")
    )
    # The Makefile's uv, and never a Python uv downloads.
    makefile_uv = re.search(r"^UV_VERSION\s*:=\s*(\S+)", (REPO / "Makefile").read_text(), re.M)
    assert makefile_uv
    assert f"UV_VERSION={makefile_uv.group(1)}" in dockerfile("ARG")
    assert any("UV_PYTHON_DOWNLOADS=never" in env for env in dockerfile("ENV"))
    assert "dagster-postgres==0.29.27" in extras["postgres"]
    assert any(spec.startswith("psycopg2-binary") for spec in extras["postgres"])
    assert "dagster-k8s==0.29.27" in extras["k8s"]

    (home,) = [value for value in dockerfile("ENV") if "DAGSTER_HOME=" in value]
    home_dir = re.search(r"DAGSTER_HOME=(\S+)", home)
    assert home_dir
    assert "deploy/dagster.yaml ${DAGSTER_HOME}/dagster.yaml" in dockerfile("COPY")
    assert "deploy/workspace.yaml ./workspace.yaml" in dockerfile("COPY")
    # Everything copied is in the build context the ignore file leaves.
    kept = {
        line.removeprefix("!").rstrip("/")
        for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    for copy in dockerfile("COPY"):
        *sources, _ = copy.split()
        assert set(sources) <= kept, sources
        assert all((REPO / source).exists() for source in sources)


def test_the_compose_file_runs_postgres_storage_the_code_server_webserver_and_daemon() -> None:
    services = compose()["services"]
    assert set(services) >= {"postgres", "minio", "minio-init", *DAGSTER_SERVICES}
    for name in DAGSTER_SERVICES:
        service = services[name]
        assert service["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}, name
        environment = service["environment"]
        assert set(environment) >= PG_VARIABLES, name
        assert environment["DAGSTER_PG_HOST"] == "postgres"
        assert "DAGSTER_HOME" not in environment, "the image's DAGSTER_HOME holds dagster.yaml"
        assert service["depends_on"]["postgres"] == {"condition": "service_healthy"}

    postgres = services["postgres"]["environment"]
    for server, client in (
        ("POSTGRES_USER", "DAGSTER_PG_USERNAME"),
        ("POSTGRES_PASSWORD", "DAGSTER_PG_PASSWORD"),
        ("POSTGRES_DB", "DAGSTER_PG_DB"),
    ):
        assert referenced_variable(postgres[server]) == client
        assert postgres[server] == services["daemon"]["environment"][client]


def test_the_daemon_skips_backfill_passes_while_the_code_server_restarts() -> None:
    # Without it, a pass made while the code location cannot load fails the backfill for good.
    daemon = compose()["services"]["daemon"]["environment"]
    assert daemon["DAGSTER_BACKFILL_RETRY_DEFINITION_CHANGED_ERROR"] == "1"


def test_the_code_server_gets_the_segmind_key_and_an_s3_root_from_the_environment() -> None:
    services = compose()["services"]
    code = services["code"]["environment"]
    assert referenced_variable(code["SEGMIND_API_KEY"]) == "SEGMIND_API_KEY"
    assert ":?" in code["SEGMIND_API_KEY"]  # required: never the embedded emulator by accident
    assert referenced_variable(code["DAGSTER_PG_PASSWORD"]) == "DAGSTER_PG_PASSWORD"
    root = re.fullmatch(r"\$\{FLUX_STORAGE_ROOT:-(s3://[^}]+)\}", code["FLUX_STORAGE_ROOT"])
    assert root, code["FLUX_STORAGE_ROOT"]
    assert code["AWS_ENDPOINT_URL"] == "${AWS_ENDPOINT_URL:-http://minio:9000}"
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(code)
    assert services["code"]["depends_on"]["minio-init"] == {
        "condition": "service_completed_successfully"
    }
    # Only the code server (where runs execute) holds the key.
    for name in ("webserver", "daemon"):
        assert "SEGMIND_API_KEY" not in services[name]["environment"]


def test_the_webserver_and_daemon_load_the_code_server_under_the_same_location_name() -> None:
    services = compose()["services"]
    (entry,) = load_yaml(DEPLOY / "workspace.yaml")["load_from"]
    server = entry["grpc_server"]
    assert server["location_name"] == python_module_location()["location_name"]
    assert server["host"] in services
    assert str(server["port"]) == option(image_command(), "-p", "--port")
    assert "command" not in services[server["host"]]  # it runs the image's command
    for name in ("webserver", "daemon"):
        command = services[name]["command"]
        assert option(command, "-w", "--workspace") == "workspace.yaml", name
        assert services[name]["depends_on"][server["host"]] == {"condition": "service_healthy"}
    assert services["webserver"]["command"][0] == "dagster-webserver"
    assert services["daemon"]["command"][:2] == ["dagster-daemon", "run"]


def test_every_variable_the_files_require_is_named_in_the_env_example() -> None:
    text = (DEPLOY / "docker-compose.yaml").read_text()
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", text))
    assert required == {"SEGMIND_API_KEY", "DAGSTER_PG_PASSWORD"}
    example = (DEPLOY / ".env.example").read_text()
    assert all(re.search(rf"^{name}=$", example, re.MULTILINE) for name in required)
    assert ".env" in (DEPLOY / ".gitignore").read_text().split()


def test_dagster_yaml_is_valid_instance_config_read_from_the_pg_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dagster._core.instance.config import dagster_instance_config

    storage = load_yaml(DEPLOY / "dagster.yaml")["storage"]["postgres"]["postgres_db"]
    fields = {"hostname", "port", "username", "password", "db_name"}
    assert {storage[field]["env"] for field in fields} == PG_VARIABLES
    assert storage["scheme"] == "postgresql+psycopg2"

    for name in PG_VARIABLES:
        monkeypatch.setenv(name, "5432" if name == "DAGSTER_PG_PORT" else f"value-of-{name}")
    (tmp_path / "dagster.yaml").write_bytes((DEPLOY / "dagster.yaml").read_bytes())
    config, _ = dagster_instance_config(str(tmp_path))
    assert config["telemetry"] == {"enabled": False}
    assert config["run_coordinator"]["class"] == "PoolQueuedRunCoordinator"
    assert config["concurrency"]["pools"]["default_limit"] == 1
    assert config["run_coordinator"]["config"]["dequeue_interval_seconds"] == 1
    assert config["run_retries"] == {
        "enabled": True,
        "max_retries": 2,
        "retry_on_asset_or_op_failure": False,
    }


def test_helm_values_use_only_chart_keys_and_mirror_dagster_yaml() -> None:
    values = load_yaml(DEPLOY / "helm" / "values.yaml")
    jsonschema.validate(values, HELM_VALUES_SUBSET)
    instance = load_yaml(DEPLOY / "dagster.yaml")

    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    assert values["dagster-user-deployments"]["enabled"]
    arguments = deployment.get("codeServerArgs") or deployment["dagsterApiGrpcArgs"]
    assert option(arguments, "-m", "--module-name") == python_module_location()["module_name"]
    assert deployment["includeConfigInLaunchedRuns"] == {"enabled": True}
    env_names = {variable["name"] for variable in deployment["env"]}
    assert "FLUX_STORAGE_ROOT" in env_names
    assert "SEGMIND_API_KEY" not in env_names  # from a Kubernetes secret, never in values
    assert deployment["envSecrets"]

    postgres = instance["storage"]["postgres"]["postgres_db"]
    assert values["postgresql"]["postgresqlScheme"] == postgres["scheme"]
    assert "postgresqlPassword" not in values["postgresql"]  # from global.postgresqlSecretName
    assert values["global"]["postgresqlSecretName"]

    concurrency = values["concurrency"]
    assert concurrency["enabled"]
    assert (
        concurrency["runs"]["maxConcurrentRuns"]
        == (instance["concurrency"]["runs"]["max_concurrent_runs"])
    )
    assert concurrency["pools"]["defaultLimit"] == instance["concurrency"]["pools"]["default_limit"]
    assert concurrency["pools"]["granularity"] == instance["concurrency"]["pools"]["granularity"]
    # The chart refuses run limits set both here and on the run coordinator.
    assert values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"] == {}
    assert values["dagsterDaemon"]["runCoordinator"]["type"] == "QueuedRunCoordinator"
    monitoring = values["dagsterDaemon"]["runMonitoring"]
    assert monitoring["enabled"] == instance["run_monitoring"]["enabled"]
    assert monitoring["startTimeoutSeconds"] == instance["run_monitoring"]["start_timeout_seconds"]
    retries = values["dagsterDaemon"]["runRetries"]
    assert retries == {
        "enabled": instance["run_retries"]["enabled"],
        "maxRetries": instance["run_retries"]["max_retries"],
        "retryOnAssetOrOpFailure": instance["run_retries"]["retry_on_asset_or_op_failure"],
    }
    assert values["telemetry"] == instance["telemetry"] == {"enabled": False}


def test_the_helm_daemon_skips_backfill_passes_while_the_code_location_restarts() -> None:
    # As the compose daemon: a pass made while the user deployment restarts would fail the
    # backfill for good.
    env = load_yaml(DEPLOY / "helm" / "values.yaml")["dagsterDaemon"]["env"]
    assert {"name": "DAGSTER_BACKFILL_RETRY_DEFINITION_CHANGED_ERROR", "value": "1"} in env


def test_the_subset_schema_refuses_keys_the_chart_does_not_have() -> None:
    values = load_yaml(DEPLOY / "helm" / "values.yaml")
    values["runLauncher"]["config"]["k8sRunLauncher"]["imagePullPolicyy"] = "Always"
    with pytest.raises(jsonschema.ValidationError, match="imagePullPolicyy"):
        jsonschema.validate(values, HELM_VALUES_SUBSET)


@pytest.mark.slow
def test_the_image_command_starts_a_code_server_that_answers(tmp_path: Path) -> None:
    """The Dockerfile's command, run here (on loopback, a free port) by the installed CLI."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    command = image_command()
    command[command.index("-h") + 1] = "127.0.0.1"
    command[command.index("-p") + 1] = port
    dagster = Path(sys.executable).with_name("dagster")
    log = tmp_path / "code-server.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [str(dagster), *command[1:]], cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            check = forked_cli.run(
                [str(dagster), "api", "grpc-health-check", "-p", port], env=os.environ
            )
            if check.returncode == 0:
                break
            assert server.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(1)
    finally:
        # Its shutdown is not what this test checks: a code server that takes longer than 30 s
        # to wind down its gRPC child (seen under pytest-xdist) is killed instead.
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=30)
