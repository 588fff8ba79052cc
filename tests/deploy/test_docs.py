"""docs/deploy.md: the one command, the files it names, and the runbook an operator needs."""

from __future__ import annotations

import re

from tests.deploy.conftest import DOCS, ROOT

ONE_COMMAND = "docker compose --env-file deploy/.env -f deploy/compose.yaml up -d"
TEXT = DOCS.read_text(encoding="utf-8")
# Made by the operator from their examples; never in the repository.
MADE_BY_HAND = {
    "deploy/.env",
    "deploy/k8s/production/secrets.env",
    "deploy/models",
    "deploy/hf-cache",
    "deploy/models/karlo-v1-alpha",
}


def headings() -> list[str]:
    return re.findall(r"^#{2,4} (.+)$", TEXT, flags=re.M)


def test_the_one_command_is_documented():
    """The compose section gives the one command, after copying env.example to deploy/.env."""
    assert ONE_COMMAND in TEXT
    assert TEXT.index("cp deploy/env.example deploy/.env") < TEXT.index(ONE_COMMAND)


def test_every_deploy_path_the_docs_name_exists():
    """Each deploy/ path in docs/deploy.md is in the repository (or is one the operator makes)."""
    paths = set(re.findall(r"(?<![\w/.])(deploy/[\w./-]*[\w])", TEXT))
    assert "deploy/compose.yaml" in paths
    missing = sorted(p for p in paths - MADE_BY_HAND if not (ROOT / p).exists())
    assert not missing, missing


def test_relative_links_resolve():
    """Every relative link to a repository file (outside the adapters' own docs) resolves."""
    for target in re.findall(r"\]\((\.\./[^)#]+)", TEXT):
        assert (DOCS.parent / target).resolve().exists(), target


def test_runbook_has_the_operator_sections():
    """The runbook covers scaling workers, upgrades, rotating tokens, backups and every alert."""
    found = set(headings())
    assert {
        "Scaling workers",
        "Upgrading",
        "Rotating tokens and secrets",
        "Backing up and restoring",
        "Alerts",
    } <= found
    assert "kubectl -n imagine-bot scale deployment/imagine-bot-worker" in TEXT
    assert "pg_dump" in TEXT and "pg_restore" in TEXT and "imagine-bot_images" in TEXT
