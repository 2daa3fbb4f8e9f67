"""The key paths of Dagster's Helm chart that ``deploy/helm/values.yaml`` uses, as a JSON schema.

Written by hand from the chart's ``helm/dagster/values.schema.json`` (dagster-io/dagster, read at
commit bdb8547; ``dagsterDaemon.env`` / ``envConfigMaps`` / ``envSecrets`` from its ``Daemon``
definition, the same types as a user deployment's) and, for ``concurrency`` (newer than that
file), from the chart's schema model ``schema/charts/dagster/subschema/concurrency.py``. Only
the keys these values set are listed: each object forbids keys the chart does not have (a
misspelt or invented key fails), and each value has the chart's type. ``required`` is left out:
the chart's own ``values.yaml`` supplies every default that an override file omits, and ``helm``
validates the merged result.
"""

from __future__ import annotations

from typing import Any


def _object(**properties: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "additionalProperties": False}


STRING = {"type": "string"}
INTEGER = {"type": "integer"}
BOOLEAN = {"type": "boolean"}
PULL_POLICY = {"enum": ["Always", "IfNotPresent", "Never"]}
K8S_OBJECT = {"type": "object"}  # a Kubernetes API object the chart passes through
K8S_LIST = {"type": "array", "items": K8S_OBJECT}
ENV = {
    "anyOf": [
        {"type": "object", "additionalProperties": STRING},
        {"type": "array", "items": _object(name=STRING, value=STRING, valueFrom=K8S_OBJECT)},
    ]
}
SECRET_REFS = {"type": "array", "items": _object(name=STRING, optional=BOOLEAN)}

USER_DEPLOYMENT = _object(
    name=STRING,
    image=_object(
        repository=STRING,
        tag={"anyOf": [STRING, INTEGER, {"type": "null"}]},
        pullPolicy=PULL_POLICY,
    ),
    dagsterApiGrpcArgs={"type": "array", "items": STRING},
    codeServerArgs={"type": "array", "items": STRING},
    includeConfigInLaunchedRuns=_object(enabled=BOOLEAN),
    port=INTEGER,
    env=ENV,
    envConfigMaps=SECRET_REFS,
    envSecrets=SECRET_REFS,
    resources=K8S_OBJECT,
)

K8S_RUN_LAUNCHER = _object(
    imagePullPolicy=PULL_POLICY,
    jobNamespace={"anyOf": [STRING, {"type": "null"}]},
    loadInclusterConfig=BOOLEAN,
    envConfigMaps=SECRET_REFS,
    envSecrets=SECRET_REFS,
    envVars={"type": "array", "items": STRING},
    volumeMounts=K8S_LIST,
    volumes=K8S_LIST,
    runK8sConfig=_object(
        containerConfig=K8S_OBJECT,
        podSpecConfig=K8S_OBJECT,
        podTemplateSpecMetadata=K8S_OBJECT,
        jobSpecConfig=K8S_OBJECT,
        jobMetadata=K8S_OBJECT,
    ),
)

QUEUED_RUN_COORDINATOR = _object(
    maxConcurrentRuns={"anyOf": [INTEGER, {"type": "null"}]},
    tagConcurrencyLimits={"anyOf": [{"type": "array"}, {"type": "null"}]},
    dequeueIntervalSeconds={"anyOf": [INTEGER, {"type": "null"}]},
    dequeueUseThreads={"anyOf": [BOOLEAN, {"type": "null"}]},
    dequeueNumWorkers={"anyOf": [INTEGER, {"type": "null"}]},
)

#: The override file's schema: top-level keys of the chart, each as deep as the values go.
HELM_VALUES_SUBSET: dict[str, Any] = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    **_object(
        **{
            "global": _object(
                postgresqlSecretName=STRING,
                dagsterHome=STRING,
                serviceAccountName=STRING,
            ),
            "dagster-user-deployments": _object(
                enabled=BOOLEAN,
                enableSubchart=BOOLEAN,
                deployments={"type": "array", "items": USER_DEPLOYMENT, "minItems": 1},
            ),
            "runLauncher": {
                **_object(
                    type={"enum": ["CeleryK8sRunLauncher", "K8sRunLauncher", "CustomRunLauncher"]},
                    config=_object(k8sRunLauncher=K8S_RUN_LAUNCHER),
                ),
                "required": ["type", "config"],
            },
            "postgresql": _object(
                enabled=BOOLEAN,
                postgresqlHost=STRING,
                postgresqlUsername=STRING,
                postgresqlPassword=STRING,
                postgresqlDatabase=STRING,
                postgresqlParams={"type": "object"},
                postgresqlScheme=STRING,
                service=_object(port=INTEGER),
            ),
            "dagsterDaemon": _object(
                enabled=BOOLEAN,
                env=ENV,
                envConfigMaps=SECRET_REFS,
                envSecrets=SECRET_REFS,
                runCoordinator={
                    **_object(
                        enabled=BOOLEAN,
                        type={"enum": ["QueuedRunCoordinator", "CustomRunCoordinator"]},
                        config=_object(queuedRunCoordinator=QUEUED_RUN_COORDINATOR),
                    ),
                    "required": ["enabled", "type", "config"],
                },
                # The chart types these two as free objects; the keys below are the ones its
                # instance template reads.
                runMonitoring=_object(
                    enabled=BOOLEAN,
                    startTimeoutSeconds=INTEGER,
                    pollIntervalSeconds=INTEGER,
                    maxResumeRunAttempts=INTEGER,
                ),
                runRetries=_object(
                    enabled=BOOLEAN, maxRetries=INTEGER, retryOnAssetOrOpFailure=BOOLEAN
                ),
            ),
            "concurrency": _object(
                enabled=BOOLEAN,
                pools=_object(
                    defaultLimit={"anyOf": [INTEGER, {"type": "null"}]},
                    granularity={"enum": ["run", "op", None]},
                    opGranularityRunBuffer={"anyOf": [INTEGER, {"type": "null"}]},
                ),
                runs=_object(
                    maxConcurrentRuns={"anyOf": [INTEGER, {"type": "null"}]},
                    tagConcurrencyLimits={"type": "array"},
                ),
            ),
            "telemetry": {**_object(enabled=BOOLEAN), "required": ["enabled"]},
        }
    ),
}
