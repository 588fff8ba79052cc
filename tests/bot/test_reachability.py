"""Every command a user can give is reachable on every front-end, or listed as deliberately
absent there with the reason: a new Command type cannot be forgotten on one of them."""

from __future__ import annotations

import typing
from types import SimpleNamespace

import discord
from discord import app_commands

from bot import commands as c
from bot.discord.slash import ABSENT, REACHES, add_commands

ALL = set(typing.get_args(c.Command))

#: A text that reaches each command on the console and Slack (both use the text parser; Slack
#: also sends them as `/imagine <sub-command>` and `/imagine-admin ...`).
TEXT = {
    c.Imagine: "/imagine a red star",
    c.Vary: "/vary 1:2",
    c.Edit: "/edit 1:2 --region left a blue ring",
    c.Blend: "/blend 1:1 1:2",
    c.Upscale: "/upscale 1:2",
    c.Reroll: "/reroll",
    c.Cancel: "/cancel 3",
    c.History: "/history 2",
    c.Thread: "/thread 1",
    c.Quota: "/quota",
    c.Help: "/help",
    c.Gallery: "/gallery",
    c.AdminQuota: "/imagine-admin quota set @bob 5",
    c.AdminBan: "/imagine-admin ban @bob",
    c.AdminUnban: "/imagine-admin unban @bob",
    c.AdminBlockTerm: "/imagine-admin block-term gore",
    c.AdminUnblockTerm: "/imagine-admin unblock-term gore",
    c.AdminAudit: "/imagine-admin audit",
    c.AdminStats: "/imagine-admin stats 7",
    c.AdminRetention: "/imagine-admin retention 30",
    c.AdminModRole: "/imagine-admin mod-role add @&mods",
}


def test_every_command_has_a_text_form():
    """The console and Slack reach every command through the one text parser."""
    assert set(TEXT) == ALL
    for kind, text in TEXT.items():
        assert isinstance(c.parse_command(text), kind), text
    assert isinstance(c.parse_imagine_text("history 2"), c.History)  # Slack's `/imagine history 2`


def test_every_command_is_a_discord_command_or_absent_with_a_reason():
    """Discord reaches every command through a registered slash command (or says why not)."""
    assert set(REACHES) | set(ABSENT) == ALL
    assert not set(REACHES) & set(ABSENT)
    assert all(reason.strip() for reason in ABSENT.values())
    tree = app_commands.CommandTree(discord.Client(intents=discord.Intents.none()))

    async def no_choices(interaction, current):
        return []

    handler = SimpleNamespace(model_choices=no_choices)
    add_commands(tree, handler, models=())

    def names(commands, prefix=""):
        for command in commands:
            path = f"{prefix} {command.name}" if prefix else f"/{command.name}"
            yield path
            if isinstance(command, app_commands.Group):
                yield from names(command.commands, path)

    registered = set(names(tree.get_commands()))
    missing = {kind.__name__: path for kind, path in REACHES.items() if path not in registered}
    assert not missing, missing
