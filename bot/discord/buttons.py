"""Buttons whose whole meaning is in their custom_id, so they keep working after a restart.

They are `DynamicItem`s: discord.py matches a pressed button's custom_id against the templates
registered with `Client.add_dynamic_items`, with no view kept in memory. A job button says what
to do (`v`ary, `u`pscale, `r`eroll, `x` cancel, `z`oom out, `p`an, `e`dit a region), to which
job, for grids which image, and for a pan which way: `imagine:v:12:3` (up to 8: an
interpolation strip has 3-8 frames), `imagine:p:12:1:l`. History pages are `imagine:h:2`.
Every custom_id stays far below Discord's 100 characters.
"""

from __future__ import annotations

import re
from typing import Any

import discord

from engine.domain.types import GenerationKind
from engine.domain.views import GenerationView, HistoryPage

#: A pan button's letter → the direction it pans.
PAN_LETTERS = {"l": "left", "r": "right", "u": "up", "d": "down"}


class JobButton(
    discord.ui.DynamicItem[discord.ui.Button],
    template=r"imagine:(?P<action>[vurxzpe]):(?P<job>[0-9]{1,12})(?::(?P<index>[1-8])(?::(?P<pan>[lrud]))?)?",
):
    """V1–V4, U1–U4, 🔄 and ❌ on a job's messages; 🔁, Vary (Region), Zoom Out and the pans
    under a single image."""

    def __init__(
        self,
        action: str,
        job_id: int,
        index: int | None = None,
        pan: str | None = None,
        *,
        label: str | None = None,
        emoji: str | None = None,
        style: discord.ButtonStyle = discord.ButtonStyle.secondary,
        row: int | None = None,
    ) -> None:
        custom_id = f"imagine:{action}:{job_id}" + (f":{index}" if index else "") + (f":{pan}" if pan else "")
        super().__init__(discord.ui.Button(label=label, emoji=emoji, style=style, custom_id=custom_id, row=row))
        self.action = action
        self.job_id = job_id
        self.index = index
        self.pan = pan

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> JobButton:
        index = match["index"]
        return cls(match["action"], int(match["job"]), int(index) if index else None, match["pan"])

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        handler = interaction.client.handler
        if self.action == "e":
            await handler.open_region_form(interaction, self.job_id, self.index)
        else:
            await handler.job_button(interaction, self.action, self.job_id, self.index, PAN_LETTERS.get(self.pan or ""))


class HistoryButton(discord.ui.DynamicItem[discord.ui.Button], template=r"imagine:h:(?P<page>[0-9]{1,6})"):
    """◀ / ▶ on the (ephemeral) /history message: show another page to whoever pressed it."""

    def __init__(self, page: int, *, label: str) -> None:
        super().__init__(discord.ui.Button(label=label, custom_id=f"imagine:h:{page}"))
        self.page = page

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str], /
    ) -> HistoryButton:
        return cls(int(match["page"]), label=getattr(item, "label", None) or "")

    async def callback(self, interaction: discord.Interaction[Any]) -> None:
        await interaction.client.handler.history_page(interaction, self.page)


def cancel_view(job_id: int) -> discord.ui.View:
    """The ❌ button on a queued or running job's status message."""
    view = discord.ui.View(timeout=None)
    view.add_item(JobButton("x", job_id, label="Cancel", emoji="❌", style=discord.ButtonStyle.danger))
    return view


def result_view(job: GenerationView) -> discord.ui.View | None:
    """U1–U4 / V1–V4 / 🔄 under a grid; under a single image 🔁 Vary, 🖌️ Vary (Region), 🔍 Zoom
    Out 2× (and 🔄), then ⬅️ ➡️ ⬆️ ⬇️ pans."""
    view = discord.ui.View(timeout=None)
    indices = [image.index for image in job.images]
    if not indices:
        return None
    row = 0
    if len(indices) > 1:
        # Discord allows 5 buttons per row and 5 rows: U and V rows of up to 5, then 🔄.
        for action in ("u", "v"):
            for start in range(0, len(indices), 5):
                for index in indices[start : start + 5]:
                    view.add_item(JobButton(action, job.id, index, label=f"{action.upper()}{index}", row=row))
                row += 1
    else:
        index = indices[0]
        view.add_item(JobButton("v", job.id, index, label="Vary", emoji="🔁", row=0))
        view.add_item(JobButton("e", job.id, index, label="Vary (Region)", emoji="🖌️", row=0))
        view.add_item(JobButton("z", job.id, index, label="Zoom Out 2×", emoji="🔍", row=0))
        for letter, emoji in (("l", "⬅️"), ("r", "➡️"), ("u", "⬆️"), ("d", "⬇️")):
            view.add_item(JobButton("p", job.id, index, letter, emoji=emoji, row=1))
    if job.kind != GenerationKind.UPSCALE:  # an upscale renders the same image again: no reroll
        view.add_item(JobButton("r", job.id, emoji="🔄", style=discord.ButtonStyle.primary, row=min(row, 4)))
    return view


def history_view(page: HistoryPage) -> discord.ui.View | None:
    if page.pages <= 1:
        return None
    view = discord.ui.View(timeout=None)
    if page.page > 1:
        view.add_item(HistoryButton(page.page - 1, label=f"◀ page {page.page - 1}"))
    if page.page < page.pages:
        view.add_item(HistoryButton(page.page + 1, label=f"page {page.page + 1} ▶"))
    return view
