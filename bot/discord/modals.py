"""The Vary (Region) form: which part of an image to redraw, and from what prompt.

A single image's 🖌️ button opens it. Its custom_id says which image (`imagine:e:12:1`), and its
submission is answered from that alone (ImagineClient.on_interaction), so a form opened before
a restart still works after it; nothing about it is kept in memory.
"""

from __future__ import annotations

import re
from typing import Any

import discord

from engine.domain.edits import REGION_NAMES

FORM_ID = re.compile(r"imagine:e:(?P<job>[0-9]{1,12}):(?P<index>[1-8])")
MAX_BOX_CHARS = 40  # "0.25,0.25,0.5,0.5" needs 17
MAX_CUSTOM_ID_CHARS = 100  # Discord's cap: anything longer is not from a form of ours


def region_form(job_id: int, index: int, *, max_prompt_chars: int) -> discord.ui.Modal:
    """The form for redrawing part of image `index` of job `job_id`."""
    form = discord.ui.Modal(title=f"Vary (Region) of #{job_id}:{index}", custom_id=f"imagine:e:{job_id}:{index}")
    menu: discord.ui.Select[Any] = discord.ui.Select(
        custom_id="region",
        placeholder="Which part to redraw",
        options=[discord.SelectOption(label=name, value=name) for name in REGION_NAMES],
        required=False,
    )
    form.add_item(discord.ui.Label(text="Region", component=menu))
    form.add_item(
        discord.ui.Label(
            text="Or a box X,Y,W,H",
            description="Fractions of the image, e.g. 0.5,0,0.5,1 for the right half",
            component=discord.ui.TextInput(custom_id="box", required=False, max_length=MAX_BOX_CHARS),
        )
    )
    form.add_item(
        discord.ui.Label(
            text="Prompt",
            description="What to draw there",
            component=discord.ui.TextInput(
                custom_id="prompt", style=discord.TextStyle.paragraph, max_length=min(max_prompt_chars, 4000)
            ),
        )
    )
    # Answered by its custom_id (see the module's docstring), so discord.py need not keep it.
    form.stop()
    return form


def form_values(data: Any) -> dict[str, str]:
    """A submitted form's answers by custom_id: a text input's text, a menu's first choice ("" if
    none). Reads labels (type 18) and legacy action rows alike; anything else is skipped, and a
    garbled payload gives no answers rather than an error."""
    values: dict[str, str] = {}

    def visit(component: Any) -> None:
        if not isinstance(component, dict):
            return
        custom_id = component.get("custom_id")
        if isinstance(custom_id, str) and len(custom_id) <= MAX_CUSTOM_ID_CHARS:
            if isinstance(component.get("value"), str):
                values[custom_id] = component["value"]
            elif isinstance(component.get("values"), list):
                chosen = component["values"]
                values[custom_id] = chosen[0] if chosen and isinstance(chosen[0], str) else ""
        visit(component.get("component"))
        for child in component.get("components") or []:
            visit(child)

    for component in (data.get("components") if isinstance(data, dict) else None) or []:
        visit(component)
    return values
