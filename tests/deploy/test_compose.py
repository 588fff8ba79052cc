"""deploy/compose.yaml: valid for the real compose, and every service wired the way it must run."""

from __future__ import annotations

import re
import shlex

import pytest

from bot.cli import build_parser
from tests.deploy.conftest import (
    CHAT_SECRET,
    DEPLOY,
    FILLED_IN,
    ROOT,
    SETTINGS,
    compose,
    compose_project,
    is_worker,
    load_yaml,
    uses_our_image,
)

GPU_SLOTS = 8  # worker-gpu0 .. worker-gpu7


def env_names(service: dict) -> set[str]:
    """The variable names a service's `environment` sets or passes through (list or mapping)."""
    environment = service.get("environment") or {}
    if isinstance(environment, dict):
        return set(environment)
    return {entry.split("=", 1)[0] for entry in environment}


def imagine_commands(service: dict) -> list[list[str]]:
    """The `imagine-bot` argument lists a service runs (through the image's entrypoint or a shell)."""
    command = service.get("command") or []
    if service.get("entrypoint"):
        return [shlex.split(m) for m in re.findall(r"imagine-bot ([^;&|]+)", " ".join(command))]
    return [list(command)]


def test_compose_accepts_the_file_with_the_example_env(tmp_path):
    """`docker compose config` validates the file (every profile) with deploy/.env = env.example."""
    deploy = compose_project(tmp_path, {"POSTGRES_PASSWORD": "pg-secret"})
    compose(deploy, "--profile", "*", "config", "--quiet")


def test_compose_refuses_to_start_without_a_postgres_password(tmp_path):
    """An unedited copy of env.example stops compose with a message naming POSTGRES_PASSWORD."""
    deploy = compose_project(tmp_path)
    result = compose(deploy, "config", "--quiet", check=False)
    assert result.returncode != 0
    assert "set POSTGRES_PASSWORD in deploy/.env" in result.stderr


def test_default_profiles_start_both_bots_and_one_worker(tmp_path):
    """The example's COMPOSE_PROFILES starts the Discord and Slack bots and the GPU 0 worker."""
    deploy = compose_project(tmp_path, {"POSTGRES_PASSWORD": "x"})
    services = set(compose(deploy, "config", "--services").stdout.split())
    assert services == {
        "postgres",
        "redis",
        "migrate",
        "discord",
        "slack",
        "gallery",
        "retention",
        "worker-gpu0",
        "flower",
    }


@pytest.mark.parametrize("gpus", [1, 2, 5, 8])
def test_gpus_profile_starts_one_worker_per_gpu(tmp_path, gpus):
    """COMPOSE_PROFILES=gpus-N starts exactly the workers for GPUs 0..N-1."""
    deploy = compose_project(tmp_path, {"POSTGRES_PASSWORD": "x", "COMPOSE_PROFILES": f"gpus-{gpus}"})
    services = set(compose(deploy, "config", "--services").stdout.split())
    assert {s for s in services if is_worker(s)} == {f"worker-gpu{i}" for i in range(gpus)}


def test_every_service_has_a_pinned_image_or_a_build_that_exists(compose_raw):
    """Each service builds from a Dockerfile in the repository or runs a tagged upstream image."""
    for name, service in compose_raw["services"].items():
        build = service.get("build")
        if build:
            context = (DEPLOY / build["context"]).resolve()
            assert context == ROOT, f"{name}: the build context is the repository root"
            assert (context / build["dockerfile"]).is_file(), f"{name}: {build['dockerfile']} missing"
            assert uses_our_image(service), f"{name}: a build is tagged imagine-bot[-worker]"
        else:
            image = service.get("image", "")
            assert re.fullmatch(r"[\w./-]+:[\w.-]+", image), f"{name}: needs an image with a tag"
            assert not image.endswith(":latest"), f"{name}: pin the image's version"


def test_images_match_their_roles(compose_raw):
    """Workers run the CUDA worker image; every other imagine-bot process the slim bot image."""
    for name, service in compose_raw["services"].items():
        if not uses_our_image(service):
            continue
        dockerfile = service["build"]["dockerfile"]
        expected = "deploy/Dockerfile.worker" if is_worker(name) else "deploy/Dockerfile.bot"
        assert dockerfile == expected, name


def test_imagine_variables_are_settings(compose_raw):
    """Every IMAGINE_* variable compose sets, passes or interpolates is read by a settings class."""
    used = set(re.findall(r"\b(IMAGINE_[A-Z0-9_]+)", (DEPLOY / "compose.yaml").read_text()))
    for service in compose_raw["services"].values():
        used |= {n for n in env_names(service) if n.startswith("IMAGINE_")}
    unknown = sorted(used - set(SETTINGS))
    assert not unknown, f"compose uses variables no settings class defines: {unknown}"


def test_long_running_services_have_health_checks(compose_raw):
    """Every service that keeps running has a health check; only the one-shot migration has none."""
    for name, service in compose_raw["services"].items():
        if service.get("restart") == "no":
            assert name == "migrate", f"{name}: only the migration is one-shot"
            continue
        assert service.get("restart") == "unless-stopped", f"{name}: restart it when it dies"
        check = service.get("healthcheck") or {}
        assert not check.get("disable") and check.get("test"), f"{name}: needs a healthcheck"


def test_health_checks_ask_the_ops_endpoints(compose_raw):
    """imagine-bot processes report ready on /readyz (ops port); the gallery on /healthz (its port)."""
    for name, service in compose_raw["services"].items():
        if not uses_our_image(service) or service.get("restart") == "no" or name == "retention":
            continue
        test = " ".join(service["healthcheck"]["test"])
        if name == "gallery":
            assert "/healthz" in test and "IMAGINE_GALLERY_PORT" in test
        else:
            assert "/readyz" in test and "IMAGINE_OPS_PORT" in test, name


def test_depends_on_waits_for_health_or_completion(compose_raw):
    """Each dependency waits for a healthy server or a successfully finished one-shot."""
    services = compose_raw["services"]
    for name, service in services.items():
        depends = service.get("depends_on") or {}
        assert isinstance(depends, dict), f"{name}: depends_on needs conditions"
        for target, spec in depends.items():
            condition = spec.get("condition")
            if condition == "service_healthy":
                assert services[target].get("healthcheck", {}).get("test"), target
            elif condition == "service_completed_successfully":
                assert services[target].get("restart") == "no", target
            else:
                pytest.fail(f"{name} → {target}: condition {condition!r}")


def test_imagine_processes_start_after_the_migration(compose_raw):
    """Bots, gallery, retention and workers wait for a migrated schema, a healthy database and broker."""
    for name, service in compose_raw["services"].items():
        if not uses_our_image(service) or name == "migrate":
            continue
        depends = service["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["postgres"]["condition"] == "service_healthy", name
        assert depends["redis"]["condition"] == "service_healthy", name


def test_commands_are_imagine_bot_subcommands(compose_raw):
    """Each imagine-bot command line in compose parses with the real CLI (no typo'd subcommand)."""
    parser = build_parser()
    seen = set()
    for name, service in compose_raw["services"].items():
        if not uses_our_image(service):
            continue
        for argv in imagine_commands(service):
            assert argv, f"{name}: no imagine-bot command found"
            parser.parse_args(argv)
            seen.add(argv[0])
    assert {"migrate", "discord", "slack", "gallery", "worker", "retention"} <= seen


def test_gpu_workers_reserve_one_distinct_gpu_each(compose_raw):
    """worker-gpuN reserves GPU N alone (device_ids, never a count), one solo process."""
    workers = {n: s for n, s in compose_raw["services"].items() if is_worker(n)}
    assert sorted(workers) == [f"worker-gpu{i}" for i in range(GPU_SLOTS)]
    for index in range(GPU_SLOTS):
        service = workers[f"worker-gpu{index}"]
        devices = service["deploy"]["resources"]["reservations"]["devices"]
        assert devices == [{"driver": "nvidia", "device_ids": [str(index)], "capabilities": ["gpu"]}]
        args = build_parser().parse_args(service["command"])
        assert (args.command, args.pool, args.concurrency) == ("worker", "solo", 1)


def test_worker_profiles_form_a_ladder(compose_raw):
    """GPU 0's worker always runs; GPU N's runs under gpus-M for every M > N."""
    for index in range(GPU_SLOTS):
        profiles = compose_raw["services"][f"worker-gpu{index}"].get("profiles", [])
        expected = [] if index == 0 else [f"gpus-{m}" for m in range(index + 1, GPU_SLOTS + 1)]
        assert sorted(profiles) == sorted(expected), f"worker-gpu{index}"


def test_settings_come_from_the_env_file(compose_raw):
    """imagine-bot processes other than workers read deploy/.env; workers get named variables."""
    for name, service in compose_raw["services"].items():
        if not uses_our_image(service):
            continue
        if is_worker(name):
            assert "env_file" not in service, f"{name}: a worker must not load every secret"
        else:
            assert service.get("env_file") == [".env"], name


def test_topology_variables_are_set_by_compose(compose_resolved):
    """Every imagine-bot process talks to compose's PostgreSQL and Redis and the shared volume."""
    for name, service in compose_resolved["services"].items():
        if not uses_our_image(service):
            continue
        env = service["environment"]
        assert env["IMAGINE_DB_URL"] == f"postgresql://imagine:{FILLED_IN['POSTGRES_PASSWORD']}@postgres:5432/imagine"
        assert env["IMAGINE_BROKER_URL"] == "redis://redis:6379/0"
        assert env["IMAGINE_STORAGE_IMAGES_DIR"] == "/data/images"
        assert env["IMAGINE_DB_AUTO_MIGRATE"] == "false" and env["IMAGINE_WORKER_EMBEDDED"] == "false"
        mounts = {(v["source"], v["target"]) for v in service["volumes"] if v["type"] == "volume"}
        assert ("images", "/data/images") in mounts, name


def test_workers_hold_no_chat_secrets(compose_resolved):
    """With tokens filled in, no worker's environment contains a chat token or the gallery secret."""
    for name, service in compose_resolved["services"].items():
        if is_worker(name):
            leaked = sorted(k for k, v in service["environment"].items() if CHAT_SECRET.search(k) and v)
            assert not leaked, f"{name} holds {leaked}"
            assert FILLED_IN["IMAGINE_DISCORD_TOKEN"] not in str(service)


def test_bots_get_their_tokens(compose_resolved):
    """The Discord and Slack bots receive their tokens and the gallery secret from deploy/.env."""
    services = compose_resolved["services"]
    assert services["discord"]["environment"]["IMAGINE_DISCORD_TOKEN"] == FILLED_IN["IMAGINE_DISCORD_TOKEN"]
    assert services["slack"]["environment"]["IMAGINE_SLACK_BOT_TOKEN"] == FILLED_IN["IMAGINE_SLACK_BOT_TOKEN"]
    for name in ("discord", "slack", "gallery"):
        assert services[name]["environment"]["IMAGINE_GALLERY_SECRET"] == FILLED_IN["IMAGINE_GALLERY_SECRET"]


def test_workers_pass_through_every_setting_they_read(compose_raw):
    """A worker passes on every engine setting (all but the gallery's) from deploy/.env."""
    needed = {
        env
        for env, s in SETTINGS.items()
        if s.cls.__module__ == "engine.config" and not env.startswith("IMAGINE_GALLERY_")
    }
    for name, service in compose_raw["services"].items():
        if is_worker(name):
            missing = sorted(needed - env_names(service))
            assert not missing, f"{name} does not pass {missing}"


def test_workers_mount_models_read_only_and_the_hf_cache(compose_resolved):
    """Workers see the model folder read-only at /models and the Hugging Face cache at /hf-cache."""
    for name, service in compose_resolved["services"].items():
        if not is_worker(name):
            continue
        targets = {v["target"]: v for v in service["volumes"]}
        assert targets["/models"]["type"] == "bind" and targets["/models"].get("read_only") is True
        assert targets["/hf-cache"]["type"] == "bind"


def test_servers_are_published_safely(compose_raw):
    """Only the gallery and Slack's HTTP port are public; Flower and Prometheus bind to localhost."""
    for name, service in compose_raw["services"].items():
        for port in service.get("ports", []):
            if name in ("flower", "prometheus"):
                assert port.startswith("127.0.0.1:"), f"{name} has no login: keep it on localhost"
            else:
                assert name in ("gallery", "slack"), f"{name} publishes {port}"


def test_prometheus_scrapes_every_process_with_an_ops_port(compose_raw):
    """deploy/prometheus.yml scrapes each service that serves /readyz, and loads the alert rules."""
    config = load_yaml(DEPLOY / "prometheus.yml")
    (job,) = config["scrape_configs"]
    (dns,) = job["dns_sd_configs"]
    scraped = set(dns["names"])
    with_ops = {
        name
        for name, s in compose_raw["services"].items()
        if "/readyz" in " ".join((s.get("healthcheck") or {}).get("test", []))
    }
    assert scraped == with_ops
    assert dns["port"] == SETTINGS["IMAGINE_OPS_PORT"].cls.model_fields["port"].default
    prometheus = compose_raw["services"]["prometheus"]
    mounts = dict(v.split(":")[:2] for v in prometheus["volumes"] if v.startswith("./"))
    assert mounts["./prometheus-alerts.yaml"] in config["rule_files"]
    assert mounts["./prometheus.yml"] == "/etc/prometheus/prometheus.yml"
