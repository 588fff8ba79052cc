"""Raw option values checked against the command's declaration, before anything runs.

Discord's client offers only what a command declares (an integer from 1 to 4, a string, a
member), but Discord does not enforce it for the bot, and discord.py hands the raw JSON value to
the callback as it is: `n: 2.5`, `seed: 1.5`, `prompt: 123` or a 20-digit `page` arrive as
they were sent. `option_problem` says what is wrong with the first bad value, in words for the
user; `CheckedCommandTree` refuses such an interaction at once, privately, before deferring.
"""

from __future__ import annotations

import math
import re
from typing import Any, cast

import discord
from discord import app_commands
from discord.enums import AppCommandOptionType as Kind

_SNOWFLAKE = re.compile(r"[0-9]{1,20}")
#: What Discord itself accepts for an integer or number option.
_DISCORD_NUMBER = 2**53
_SUBCOMMAND_KINDS = (1, 2)  # SUB_COMMAND, SUB_COMMAND_GROUP


def leaf_options(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The options of the (sub)command being run, below any subcommand group and subcommand."""
    options = data.get("options") or []
    while len(options) == 1 and isinstance(options[0], dict) and options[0].get("type") in _SUBCOMMAND_KINDS:
        options = options[0].get("options") or []
    return options if isinstance(options, list) else []


def option_problem(command: app_commands.Command, data: dict[str, Any]) -> str | None:
    """What is wrong with the first option value that does not fit its declaration; else None."""
    parameters = {p.display_name: p for p in command.parameters}
    for option in leaf_options(data):
        if not isinstance(option, dict) or option.get("name") not in parameters:
            name = option.get("name") if isinstance(option, dict) else option
            return f"{command.qualified_name} has no option {str(name)[:40]!r}."
        parameter = parameters[option["name"]]
        problem = value_problem(parameter, option.get("value"))
        if problem:
            return problem
    return None


def value_problem(parameter: app_commands.Parameter, value: Any) -> str | None:
    """Worded like the text commands' errors (`--n must be between 1 and 4, got 9.`)."""
    name = f"--{parameter.display_name}"
    shown = repr(value)[:40]
    kind = parameter.type
    low, high = parameter.min_value, parameter.max_value
    if kind is Kind.string:
        if not isinstance(value, str):
            return f"{name} must be text, got {shown}."
        if (low is not None and len(value) < low) or (high is not None and len(value) > high):
            return f"{name} must be {low or 0} to {high} characters long, got {len(value)}."
    elif kind is Kind.integer:
        if type(value) is not int:
            return f"{name} must be a whole number, got {shown}."
        if not _fits(parameter, value):
            return f"{name} must be between {low} and {high}, got {value}."
    elif kind is Kind.number:
        if type(value) not in (int, float) or not math.isfinite(value):
            return f"{name} must be a number, got {shown}."
        if not _fits(parameter, value):
            return f"{name} must be between {low:g} and {high:g}, got {value:g}."
    elif kind is Kind.boolean:
        if type(value) is not bool:
            return f"{name} must be true or false, got {shown}."
    elif kind in (Kind.user, Kind.channel, Kind.role, Kind.mentionable, Kind.attachment) and (
        not isinstance(value, str) or not _SNOWFLAKE.fullmatch(value)
    ):
        return f"{name} must name a Discord {kind.name}, got {shown}."
    # Choices (an aspect ratio, add/remove) are checked where they are used, with their own words.
    return None


def _fits(parameter: app_commands.Parameter, value: float) -> bool:
    low = parameter.min_value if parameter.min_value is not None else -_DISCORD_NUMBER
    high = parameter.max_value if parameter.max_value is not None else _DISCORD_NUMBER
    return low <= value <= high


class CheckedCommandTree(app_commands.CommandTree):
    """A command tree that refuses interactions whose raw option values do not fit."""

    async def interaction_check(self, interaction: discord.Interaction, /) -> bool:
        if interaction.type is not discord.InteractionType.application_command:
            return True  # autocomplete: a half-typed value is expected
        command = interaction.command
        if not isinstance(command, app_commands.Command):
            return True
        problem = option_problem(command, cast(dict[str, Any], interaction.data or {}))
        if problem is None:
            return True
        await interaction.response.send_message(
            discord.utils.escape_mentions(problem)[:2000],
            ephemeral=True,
            allowed_mentions=discord.AllowedMentions.none(),
        )
        return False
