"""deploy/k8s: rendered by the real kustomize, valid for Kubernetes, and wired the way it must run."""

from __future__ import annotations

import pytest

from bot.cli import build_parser
from tests.deploy.conftest import (
    CHAT_SECRET,
    IMAGE_UID,
    K8S,
    SECRET_NAME,
    SETTINGS,
    by_name,
    env_file_values,
    workloads,
)

NAMESPACE = "imagine-bot"
# The oldest Kubernetes still commonly run, and the newest whose schemas the package ships.
SCHEMA_VERSIONS = ("1.30.0", None)
LONG_RUNNING = ("imagine-bot-discord", "imagine-bot-slack", "imagine-bot-gallery", "imagine-bot-worker")
#: The Discord bot is a StatefulSet (each pod runs its share of the shards); the rest Deployments.
KIND = {"imagine-bot-discord": "StatefulSet"}


def workload(objects: list[dict], name: str) -> dict:
    return by_name(objects, KIND.get(name, "Deployment"), name)


CONFIG = env_file_values(K8S / "base" / "config.env")
SECRETS_EXAMPLE = env_file_values(K8S / "production" / "secrets.env.example")


def containers(spec: dict) -> list[dict]:
    return spec.get("initContainers", []) + spec["containers"]


def port_number(container: dict, port) -> int:
    if isinstance(port, int):
        return port
    (match,) = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    return match


@pytest.mark.parametrize("overlay", ["k8s_base", "k8s_production"])
@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_manifests_match_the_kubernetes_schemas(request, overlay, version):
    """Every rendered object validates strictly (unknown fields are errors) against Kubernetes' schemas."""
    import kubernetes_validate

    version = version or kubernetes_validate.latest_version()
    objects = request.getfixturevalue(overlay)
    assert objects
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)


def test_schema_check_catches_a_misspelt_field(k8s_base):
    """The schema check is not vacuous: a misspelt field fails it."""
    import kubernetes_validate

    deployment = by_name(k8s_base, "Deployment", "imagine-bot-worker")
    broken = {**deployment, "spec": {**deployment["spec"], "replicaz": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, kubernetes_validate.latest_version(), strict=True)


def test_base_has_every_part(k8s_base):
    """The base holds the namespace, config, storage, the four deployments, their services and the jobs."""
    kinds = {(o["kind"], o["metadata"]["name"]) for o in k8s_base}
    expected = {
        ("Namespace", NAMESPACE),
        ("Job", "imagine-bot-migrate"),
        ("CronJob", "imagine-bot-retention"),
        ("Service", "imagine-bot-gallery"),
        ("Service", "imagine-bot-slack"),
        ("PersistentVolumeClaim", "imagine-images"),
        ("PersistentVolumeClaim", "imagine-models"),
        ("PersistentVolumeClaim", "imagine-hf-cache"),
    }
    expected |= {(KIND.get(name, "Deployment"), name) for name in LONG_RUNNING}
    assert expected <= kinds
    assert any(kind == "ConfigMap" and name.startswith("imagine-bot-config-") for kind, name in kinds)


def test_everything_lives_in_one_namespace(k8s_production):
    """Every namespaced object, the generated Secret included, is in the imagine-bot namespace."""
    for obj in k8s_production:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == NAMESPACE, obj["metadata"]["name"]


def test_worker_is_one_solo_process_on_one_gpu(k8s_base):
    """The worker pod has one container, one GPU (limit), one solo process, on GPU nodes."""
    spec = by_name(k8s_base, "Deployment", "imagine-bot-worker")["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert str(container["resources"]["limits"]["nvidia.com/gpu"]) == "1"
    args = build_parser().parse_args(container["args"])
    assert (args.command, args.pool, args.concurrency) == ("worker", "solo", 1)
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    assert spec["terminationGracePeriodSeconds"] > 660, "past the job's hard time limit"


def test_only_the_worker_asks_for_a_gpu(k8s_base):
    """Bots, the gallery and the jobs never hold a GPU."""
    for obj, spec in workloads(k8s_base):
        for container in containers(spec):
            resources = container.get("resources", {})
            asks = "nvidia.com/gpu" in {**resources.get("limits", {}), **resources.get("requests", {})}
            assert asks == (obj["metadata"]["name"] == "imagine-bot-worker"), obj["metadata"]["name"]


def test_workers_scale_without_surging_past_the_gpus(k8s_base, k8s_production):
    """A rollout never adds a pod beyond the replica count (it would wait for a free GPU)."""
    worker = by_name(k8s_base, "Deployment", "imagine-bot-worker")
    assert worker["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0
    assert by_name(k8s_production, "Deployment", "imagine-bot-worker")["spec"]["replicas"] >= 1


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_probes_ask_healthz_and_readyz(k8s_base, name):
    """Liveness asks /healthz and readiness /readyz on the ops port; the gallery /healthz on its own."""
    spec = workload(k8s_base, name)["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    live = container["livenessProbe"]["httpGet"]
    ready = container["readinessProbe"]["httpGet"]
    if name == "imagine-bot-gallery":
        assert live["path"] == ready["path"] == "/healthz"
        assert port_number(container, live["port"]) == int(CONFIG["IMAGINE_GALLERY_PORT"])
        return
    assert (live["path"], ready["path"]) == ("/healthz", "/readyz")
    ops_port = int(CONFIG.get("IMAGINE_OPS_PORT", 9100))
    assert port_number(container, live["port"]) == port_number(container, ready["port"]) == ops_port
    annotations = workload(k8s_base, name)["spec"]["template"]["metadata"].get("annotations", {})
    assert annotations.get("prometheus.io/port") == str(ops_port), "Prometheus scrapes the ops port"


def test_worker_startup_probe_allows_the_model_to_load(k8s_base):
    """The worker's ops port opens after the model loads: a startup probe gives it 10+ minutes."""
    (container,) = by_name(k8s_base, "Deployment", "imagine-bot-worker")["spec"]["template"]["spec"]["containers"]
    startup = container["startupProbe"]
    assert startup["httpGet"]["path"] == "/healthz"
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600


def test_migration_job_and_retention_cronjob(k8s_base):
    """A Job runs `imagine-bot migrate` once; a CronJob runs `retention --apply` daily, never overlapping."""
    job = by_name(k8s_base, "Job", "imagine-bot-migrate")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert build_parser().parse_args(container["args"]).command == "migrate"
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    cron = by_name(k8s_base, "CronJob", "imagine-bot-retention")
    (container,) = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    args = build_parser().parse_args(container["args"])
    assert (args.command, args.apply) == ("retention", True)
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    minute, hour, *rest = cron["spec"]["schedule"].split()
    assert minute.isdigit() and hour.isdigit() and rest == ["*", "*", "*"], "once a day"


def test_container_args_are_imagine_bot_subcommands(k8s_base):
    """Every container's args parse with the real CLI."""
    for _obj, spec in workloads(k8s_base):
        for container in containers(spec):
            build_parser().parse_args(container["args"])


def test_images_match_their_roles(k8s_base):
    """The worker runs the CUDA worker image; everything else the slim bot image."""
    for obj, spec in workloads(k8s_base):
        for container in containers(spec):
            expected = "imagine-bot-worker" if obj["metadata"]["name"] == "imagine-bot-worker" else "imagine-bot"
            assert container["image"] == expected, obj["metadata"]["name"]


def test_production_overlay_pins_image_tags(k8s_production):
    """The deployable overlay names a registry and a tag for both images (never :latest)."""
    for _obj, spec in workloads(k8s_production):
        for container in containers(spec):
            image = container["image"]
            assert "/" in image and ":" in image and not image.endswith(":latest"), image


def test_pods_run_as_the_images_user(k8s_base):
    """Every pod runs as non-root uid 10001 (the images' user) without privilege escalation."""
    for _obj, spec in workloads(k8s_base):
        context = spec["securityContext"]
        assert context["runAsNonRoot"] is True and context["runAsUser"] == IMAGE_UID
        for container in containers(spec):
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]


def test_secrets_are_referenced_never_inlined(k8s_base):
    """No secret value sits in a manifest or the ConfigMap; the base ships no Secret at all."""
    assert not [o for o in k8s_base if o["kind"] == "Secret"]
    assert not [k for k in CONFIG if SECRET_NAME.search(k)], "secrets belong in secrets.env"
    for _obj, spec in workloads(k8s_base):
        for container in containers(spec):
            for var in container.get("env", []):
                if SECRET_NAME.search(var["name"]):
                    assert "value" not in var and "secretKeyRef" in var["valueFrom"], var["name"]


def test_secret_references_resolve_to_the_generated_secret(k8s_production):
    """Each secretKeyRef points at the overlay's hashed Secret, and at a key it has."""
    (secret,) = [o for o in k8s_production if o["kind"] == "Secret"]
    assert secret["metadata"]["name"].startswith("imagine-bot-secrets-")
    assert set(secret["data"]) == set(SECRETS_EXAMPLE)
    refs = 0
    for _obj, spec in workloads(k8s_production):
        for container in containers(spec):
            for var in container.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    refs += 1
                    assert ref["name"] == secret["metadata"]["name"], var["name"]
                    assert ref["key"] in secret["data"], ref["key"]
                    assert ref["key"] == var["name"]
    assert refs >= 10


def test_config_map_reference_resolves(k8s_production):
    """Every pod reads the generated ConfigMap by its hashed name."""
    (config,) = [o for o in k8s_production if o["kind"] == "ConfigMap"]
    for _obj, spec in workloads(k8s_production):
        for container in containers(spec):
            names = [e["configMapRef"]["name"] for e in container["envFrom"]]
            assert names == [config["metadata"]["name"]]
            assert config["data"] == CONFIG


def test_workers_get_no_chat_secrets(k8s_base):
    """The worker, the migration and retention get the database (and broker) URL, never a chat token."""
    for obj, spec in workloads(k8s_base):
        name = obj["metadata"]["name"]
        if name in ("imagine-bot-discord", "imagine-bot-slack", "imagine-bot-gallery"):
            continue
        for container in containers(spec):
            assert "secretRef" not in str(container.get("envFrom")), name
            names = {var["name"] for var in container.get("env", [])}
            assert not {n for n in names if CHAT_SECRET.search(n)}, name


def test_bots_get_their_tokens(k8s_base):
    """The Discord bot gets its token, the Slack bot its tokens, and both the gallery secret."""

    def env(name):
        (container,) = workload(k8s_base, name)["spec"]["template"]["spec"]["containers"]
        return {var["name"] for var in container.get("env", [])}

    assert {"IMAGINE_DISCORD_TOKEN", "IMAGINE_GALLERY_SECRET"} <= env("imagine-bot-discord")
    assert {
        "IMAGINE_SLACK_BOT_TOKEN",
        "IMAGINE_SLACK_SIGNING_SECRET",
        "IMAGINE_SLACK_APP_TOKEN",
        "IMAGINE_GALLERY_SECRET",
    } <= env("imagine-bot-slack")
    assert "IMAGINE_GALLERY_SECRET" in env("imagine-bot-gallery")


def test_config_and_secret_keys_are_settings(k8s_base):
    """Every variable the ConfigMap, the secrets example or a container env sets is a real setting."""
    names = set(CONFIG) | set(SECRETS_EXAMPLE)
    for _obj, spec in workloads(k8s_base):
        for container in containers(spec):
            names |= {var["name"] for var in container.get("env", [])}
    unknown = sorted(names - set(SETTINGS))
    assert not unknown, f"variables no settings class defines: {unknown}"


def test_volumes_are_shared_and_models_read_only(k8s_base):
    """Images live on one shared claim; workers mount models read-only and the HF cache at HF_HOME."""
    claims = {o["metadata"]["name"]: o for o in k8s_base if o["kind"] == "PersistentVolumeClaim"}
    assert claims["imagine-images"]["spec"]["accessModes"] == ["ReadWriteMany"]
    spec = by_name(k8s_base, "Deployment", "imagine-bot-worker")["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m for m in spec["containers"][0]["volumeMounts"]}
    assert mounts["/models"].get("readOnly") is True
    assert set(mounts) == {"/data/images", "/models", "/hf-cache", "/data/compile-cache"}
    assert CONFIG["IMAGINE_STORAGE_IMAGES_DIR"] == "/data/images"
    for obj, pod in workloads(k8s_base):
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for container in containers(pod):
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes, f"{obj['metadata']['name']}: {mount['name']}"
                claim = volumes[mount["name"]].get("persistentVolumeClaim", {}).get("claimName")
                assert claim is None or claim in claims


def test_discord_bot_is_a_statefulset_whose_pods_split_the_shards(k8s_base):
    """The Discord bot runs as a StatefulSet; each pod takes its shards from its ordinal, with
    the replica count and shard count it is told matching the StatefulSet's replicas."""
    from bot.discord.config import DiscordSettings

    discord = workload(k8s_base, "imagine-bot-discord")
    replicas = discord["spec"]["replicas"]
    (container,) = discord["spec"]["template"]["spec"]["containers"]
    env = {var["name"]: var.get("value") for var in container.get("env", [])}
    assert int(env["IMAGINE_DISCORD_REPLICAS"]) == replicas >= 2
    settings = DiscordSettings(replicas=replicas, shard_count=int(env["IMAGINE_DISCORD_SHARD_COUNT"]))
    shares = [settings.my_shard_ids(f"imagine-bot-discord-{n}") for n in range(replicas)]
    assert sorted(i for share in shares for i in share) == list(range(settings.shard_count))
    assert by_name(k8s_base, "Service", "imagine-bot-discord")["spec"]["clusterIP"] == "None"
