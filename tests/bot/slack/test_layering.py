"""The Slack front-end stays a thin bot-side package."""

from __future__ import annotations

import pytest

from tests.architecture.test_imports import HEAVY, loaded_after


@pytest.mark.parametrize("module", ["bot.slack.app", "bot.slack.adapter", "bot.slack.blocks"])
def test_slack_bot_never_imports_torch(module):
    """The Slack bot (bolt, slack_sdk and all) leaves torch & co. out of its process."""
    loaded = loaded_after(f"import {module}")
    assert not loaded & set(HEAVY), f"{module} pulled in {loaded & set(HEAVY)}"
    assert "slack_bolt" in loaded or module == "bot.slack.blocks"


def test_cli_imports_slack_only_when_asked():
    """`import bot.cli` (every subcommand's entry point) does not load slack_bolt or slack_sdk."""
    loaded = loaded_after("import bot.cli")
    assert not loaded & {"slack_bolt", "slack_sdk"}
