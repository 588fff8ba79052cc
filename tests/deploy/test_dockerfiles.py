"""deploy/Dockerfile.bot and Dockerfile.worker: multi-stage, non-root, health-checked, right extras."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from pathlib import Path

import pytest

from bot.cli import build_parser
from tests.deploy.conftest import (
    DEPLOY,
    IMAGE_UID,
    ROOT,
    SETTINGS,
    Instruction,
    parse_dockerfile,
    run,
    tool,
)

DOCKERFILES = {"bot": DEPLOY / "Dockerfile.bot", "worker": DEPLOY / "Dockerfile.worker"}
HEAVY = ("torch", "diffusers", "transformers", "tokenizers", "safetensors")


def requirements(pyproject: Path, extras: list[str]) -> list[str]:
    """deploy/requirements.py's list: what the images install before the code."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("deploy_requirements", DEPLOY / "requirements.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.requirements(pyproject, extras)


def instructions(image: str) -> list[Instruction]:
    return parse_dockerfile(DOCKERFILES[image])


def final_stage(image: str) -> list[Instruction]:
    parsed = instructions(image)
    last = max(i.stage for i in parsed)
    return [i for i in parsed if i.stage == last]


def arg_default(image: str, name: str) -> str:
    for instruction in instructions(image):
        if instruction.keyword == "ARG" and instruction.args.startswith(f"{name}="):
            return shlex.split(instruction.args.split("=", 1)[1])[0]
    raise AssertionError(f"{image}: no ARG {name} with a default")


def exec_form(instruction: Instruction) -> list[str]:
    return json.loads(instruction.args)


def package_name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower()


@pytest.mark.parametrize("image", DOCKERFILES)
def test_image_is_multi_stage(image):
    """A build stage installs; the final stage copies only the virtual environment from it."""
    parsed = instructions(image)
    froms = [i for i in parsed if i.keyword == "FROM"]
    assert len(froms) >= 2
    assert froms[0].args.endswith(" AS build")
    copies = [i.args for i in final_stage(image) if i.keyword == "COPY"]
    assert copies == ["--from=build /opt/venv /opt/venv"]
    assert not any(i.keyword == "RUN" and "pip install" in i.args for i in final_stage(image))


@pytest.mark.parametrize("image", DOCKERFILES)
def test_image_runs_as_the_shared_unprivileged_user(image):
    """The final stage runs as uid 10001 (numeric, so Kubernetes can verify runAsNonRoot)."""
    users = [i.args for i in final_stage(image) if i.keyword == "USER"]
    assert users == [f"{IMAGE_UID}:{IMAGE_UID}"]
    creates = " ".join(i.args for i in final_stage(image) if i.keyword == "RUN")
    assert f"--uid {IMAGE_UID}" in creates and "chown -R imagine:imagine /data" in creates


@pytest.mark.parametrize("image", DOCKERFILES)
def test_image_health_check_asks_readyz_on_the_ops_port(image):
    """HEALTHCHECK calls /readyz on IMAGINE_OPS_PORT with Python (the slim image has no curl)."""
    (check,) = [i for i in final_stage(image) if i.keyword == "HEALTHCHECK"]
    options, _, command = check.args.partition("CMD ")
    assert "--interval=" in options and "--start-period=" in options
    argv = json.loads(command)
    assert argv[:2] == ["python", "-c"]
    assert "/readyz" in argv[2] and "IMAGINE_OPS_PORT" in argv[2]
    compile(argv[2], "HEALTHCHECK", "exec")


@pytest.mark.parametrize("image", DOCKERFILES)
def test_entrypoint_is_imagine_bot_and_the_default_command_parses(image):
    """The image runs `imagine-bot`; its default command is a real subcommand."""
    stage = final_stage(image)
    (entrypoint,) = [i for i in stage if i.keyword == "ENTRYPOINT"]
    (cmd,) = [i for i in stage if i.keyword == "CMD"]
    assert exec_form(entrypoint) == ["imagine-bot"]
    args = build_parser().parse_args(exec_form(cmd))
    assert args.command == ("worker" if image == "worker" else "discord")
    if image == "worker":
        assert (args.pool, args.concurrency) == ("solo", 1)


def test_bot_image_installs_no_torch():
    """The bot image's extras pull in no torch/diffusers/transformers, and the build checks it."""
    extras = arg_default("bot", "EXTRAS").split()
    assert "worker" not in extras
    assert {"discord", "slack", "postgres"} <= set(extras)
    names = {package_name(r) for r in requirements(ROOT / "pyproject.toml", extras)}
    assert not names & set(HEAVY), names & set(HEAVY)
    runs = " ".join(i.args for i in instructions("bot") if i.keyword == "RUN")
    assert "find_spec('torch') is not None" in runs
    assert "pip install" in runs and "torch" not in runs.replace("find_spec('torch')", "")


def test_worker_image_installs_cuda_torch_and_the_worker_extra():
    """The worker image installs torch from a CUDA index within pyproject's range, then the worker extra."""
    extras = arg_default("worker", "EXTRAS").split()
    assert {"worker", "postgres"} <= set(extras)
    assert re.search(r"/whl/cu\d+$", arg_default("worker", "TORCH_INDEX_URL"))
    worker_extra = requirements(ROOT / "pyproject.toml", ["worker"])
    (torch_requirement,) = [r for r in worker_extra if package_name(r) == "torch"]
    assert arg_default("worker", "TORCH_REQUIREMENT") == torch_requirement
    runs = [i.args for i in instructions("worker") if i.keyword == "RUN" and i.stage == 0]
    assert "torch.version.cuda" in runs[-1], "the last build step re-checks that torch has CUDA"


def test_images_set_only_real_settings():
    """Every IMAGINE_* variable an image sets with ENV is read by a settings class."""
    for image in DOCKERFILES:
        envs = " ".join(i.args for i in instructions(image) if i.keyword == "ENV")
        unknown = set(re.findall(r"\b(IMAGINE_[A-Z0-9_]+)=", envs)) - set(SETTINGS)
        assert not unknown, f"{image}: {unknown}"


def test_worker_image_reads_models_and_hf_cache_from_volumes():
    """The worker image expects /models and a Hugging Face cache at HF_HOME=/hf-cache, offline."""
    envs = " ".join(i.args for i in final_stage("worker") if i.keyword == "ENV")
    assert "HF_HOME=/hf-cache" in envs and "HF_HUB_OFFLINE=1" in envs
    assert "NVIDIA_VISIBLE_DEVICES" not in envs, "the GPU is the one compose/Kubernetes assigns"


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule, closely enough: a pattern matches the path or one of its parent folders."""
    parts = Path(path).parts
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    return any(fnmatch.fnmatch(c, p.replace("**/", "*")) or fnmatch.fnmatch(c, p) for p in patterns for c in candidates)


@pytest.mark.parametrize("image", DOCKERFILES)
def test_copied_sources_exist_and_reach_the_build(image):
    """Everything a Dockerfile COPYs from the context exists and is not excluded by .dockerignore."""
    patterns = dockerignore_patterns()
    for instruction in instructions(image):
        if instruction.keyword != "COPY" or instruction.args.startswith("--from"):
            continue
        *sources, _ = instruction.args.split()
        for source in sources:
            assert (ROOT / source).exists(), f"{image}: COPY {source}: not in the repository"
            assert not ignored(source, patterns), f"{image}: COPY {source} is in .dockerignore"


def test_secrets_and_bulk_stay_out_of_the_build_context():
    """.dockerignore keeps env files, secrets, the venv, data and model folders out of images."""
    patterns = dockerignore_patterns()
    for path in (
        "deploy/.env",
        ".env",
        "deploy/k8s/production/secrets.env",
        ".venv/bin/python",
        ".git/config",
        "data/imagine.db",
        "models/karlo/model_index.json",
        "deploy/models/karlo/model_index.json",
        "deploy/hf-cache/hub/x",
    ):
        assert ignored(path, patterns), path
    for path in ("engine/builtin/weights/model_index.json", "migrations/versions/x.py"):
        assert not ignored(path, patterns), path


def test_hadolint_finds_nothing():
    """hadolint (Docker's parser and best-practice rules) passes both Dockerfiles."""
    result = run([tool("hadolint"), "--no-color", *map(str, DOCKERFILES.values())], check=False)
    assert result.returncode == 0, result.stdout + result.stderr
