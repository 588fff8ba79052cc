"""Image options in slash commands: `12:3`, `12`, `last:2`, or a link to one of imagine-bot's
messages (optionally followed by which image of a grid).

`ImageOption` is the Transformer every command's image option uses: it parses the text before
the command runs (a bad value is refused by name, see ImagineClient's tree error handler) and
autocompletes the user's recent images. A link is only parsed here; which job it shows is
looked up after the interaction is deferred, since that needs the database.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import discord
from discord import app_commands

from bot import commands as c
from bot.discord.actors import actor_from_interaction
from bot.discord.formatting import CHOICE_LIMIT
from bot.replies import shorten
from engine.domain.errors import UserFacingError
from engine.domain.types import GenerationStatus, ImageRef
from engine.service import ImagineService

# A link to a message imagine-bot posted, optionally followed by which image of a grid:
# "https://discord.com/channels/1/2/3 2" or ".../3:2".
_MESSAGE_LINK = re.compile(
    r"^https://(?:(?:ptb|canary)\.)?discord(?:app)?\.com/channels/(?:\d+|@me)/(\d+)/(\d+)(?:[\s:#/]+([1-8]))?$"
)


@dataclass(frozen=True)
class MessageLink:
    """A link to a message: which image it is comes from the message's record."""

    channel_id: int
    message_id: int
    index: int | None = None


Reference = ImageRef | MessageLink


def parse_reference(text: str) -> Reference:
    """`12:3`, `12`, `last:2`, or a link to one of imagine-bot's messages (+ which image)."""
    text = text.strip()
    if match := _MESSAGE_LINK.match(text):
        channel_id, message_id, index = match.groups()
        return MessageLink(int(channel_id), int(message_id), int(index) if index else None)
    return c.parse_image_ref(text)


class ImageOption(app_commands.Transformer):
    """A string option holding an image reference, offered from the user's recent images."""

    async def transform(self, interaction: discord.Interaction, value: Any, /) -> Reference:
        # A UsageError here reaches the tree's error handler (as TransformerError's cause), which
        # refuses the command with its message.
        return parse_reference(str(value))

    async def autocomplete(  # type: ignore[override]  # discord.py types choices as str|int|float
        self, interaction: discord.Interaction, value: Any, /
    ) -> list[app_commands.Choice[str]]:
        service: ImagineService = interaction.client.runtime.service  # type: ignore[attr-defined]
        return await recent_images(service, interaction, str(value))


async def recent_images(
    service: ImagineService, interaction: discord.Interaction, current: str
) -> list[app_commands.Choice[str]]:
    """The user's recent finished images, as `12:3` choices labelled with their prompt."""
    try:
        page = await service.history(actor_from_interaction(interaction), 1)
    except UserFacingError:
        return []
    choices = []
    for job in page.items:
        if job.status != GenerationStatus.DONE:
            continue
        for image in job.images:
            value = f"{job.id}:{image.index}" if len(job.images) > 1 else str(job.id)
            name = shorten(f"#{job.id}:{image.index} {job.prompt}", CHOICE_LIMIT)
            if current.strip().lower() in name.lower():
                choices.append(app_commands.Choice(name=name, value=value))
    return choices[:25]


Image = app_commands.Transform[Reference, ImageOption]
