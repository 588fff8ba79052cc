"""What imagine-bot's Slack messages look like: mrkdwn escaping and Block Kit.

Buttons carry their meaning in `action_id` (`imagine:vary:2`, `imagine:pan:1:left`) and the job
id in `value`, so a button works after a restart without any state in memory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from bot import replies
from engine.domain import limits
from engine.domain.errors import UsageError
from engine.domain.types import GenerationKind, GenerationStatus
from engine.domain.views import GenerationView

ACTION_PREFIX = "imagine:"
# Exact: every id it matches is a whole press (a pan always says which image and which way), so
# bolt routes nothing to the button listener that parse_action would have to second-guess.
ACTION_PATTERN = re.compile(
    r"^imagine:(?:"
    r"(?P<kind>vary|upscale|reroll|cancel)(?::(?P<index>[1-4]))?"
    r"|(?P<edit>region|zoomout):(?P<edit_index>[1-4])"
    r"|pan:(?P<pan_index>[1-4]):(?P<direction>left|right|up|down)"
    r")\Z"  # not $: it would take a trailing newline
)
SECTION_LIMIT = 3000  # characters of text in one section block
_JOB_VALUE = re.compile(r"[0-9]{1,40}")

# Bare @here/@channel/@everyone are not mentions in API messages, but text that a client or a file
# comment renders with link_names would make them one: a word joiner keeps them plain text.
_BROADCAST = re.compile(r"@(here|channel|everyone)\b", re.IGNORECASE)


def escape(text: str) -> str:
    """User text made inert for mrkdwn: `<!everyone>` and `<@U1>` show as text and ping no one."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _BROADCAST.sub("@\u2060\\1", text)


#: The pan buttons under a single image: direction, arrow, what a screen reader says.
PANS = (("left", "⬅️", "Pan left"), ("right", "➡️", "Pan right"), ("up", "⬆️", "Pan up"), ("down", "⬇️", "Pan down"))


@dataclass(frozen=True)
class ButtonPress:
    kind: str  # vary | upscale | reroll | cancel | region | zoomout | pan (bot.actions.JobAction, and region)
    generation_id: int
    index: int | None
    direction: str | None = None  # a pan's


def parse_action(action_id: str, value: str) -> ButtonPress | None:
    """The button an action payload names; None if it is not one of ours. A value that is not
    a job number this bot could have made raises UsageError (the presser is told)."""
    match = ACTION_PATTERN.match(action_id or "")
    if not match:
        return None
    kind = match["kind"] or match["edit"] or "pan"
    index = match["index"] or match["edit_index"] or match["pan_index"]
    if not isinstance(value, str) or not _JOB_VALUE.fullmatch(value):
        raise UsageError("That button does not name a job imagine-bot knows.")
    return ButtonPress(kind, limits.job_id(int(value)), int(index) if index else None, match["direction"])


def section(text: str) -> dict[str, Any]:
    # verbatim: Slack must not auto-link channel names or parse mentions in (escaped) user text.
    return {
        "type": "section",
        "text": {"type": "mrkdwn", "text": replies.shorten(text, SECTION_LIMIT), "verbatim": True},
    }


def context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text, "verbatim": True}]}


def button(
    label: str, action: str, job_id: int, *, style: str | None = None, spoken: str | None = None
) -> dict[str, Any]:
    """`spoken`: what a screen reader says for a button whose label is only an emoji."""
    element: dict[str, Any] = {
        "type": "button",
        "text": {"type": "plain_text", "text": label},
        "action_id": ACTION_PREFIX + action,
        "value": str(job_id),
    }
    if style:
        element["style"] = style
    if spoken:
        element["accessibility_label"] = spoken
    return element


def requester(job: GenerationView) -> str:
    # A name, never a <@U…> mention: the bot's messages ping no one, not even the requester.
    return escape(job.requester_name or job.requester_external_id)


def progress_message(job: GenerationView, position: int | None = None) -> tuple[str, list[dict]]:
    """The one status message of a job: edited as it runs, with Cancel while it can be cancelled."""
    text = replies.job_status(job, position, escape)
    blocks = [section(text), context(f"requested by {requester(job)}")]
    if job.status in (GenerationStatus.QUEUED, GenerationStatus.RUNNING):
        blocks.append(
            {
                "type": "actions",
                "block_id": f"imagine-progress-{job.id}",
                "elements": [button("Cancel", "cancel", job.id, style="danger")],
            }
        )
    return text, blocks


def result_message(job: GenerationView) -> tuple[str, list[dict]]:
    """The message under a finished grid: its caption and the Variations/Upscale/Reroll buttons,
    and under a single image also Vary (Region), Zoom Out and the pans."""
    caption = replies.result_caption(job, escape)
    count = len(job.images)
    blocks: list[dict[str, Any]] = [section(caption)]
    vary = [button(f"V{i}" if count > 1 else "Variations", f"vary:{i}", job.id) for i in range(1, count + 1)]
    if job.kind == GenerationKind.UPSCALE:
        blocks.append({"type": "actions", "block_id": f"imagine-vary-{job.id}", "elements": vary})
    else:
        upscale = [button(f"U{i}" if count > 1 else "Upscale", f"upscale:{i}", job.id) for i in range(1, count + 1)]
        vary.append(button("Reroll", "reroll", job.id))
        blocks.append({"type": "actions", "block_id": f"imagine-vary-{job.id}", "elements": vary})
        blocks.append({"type": "actions", "block_id": f"imagine-upscale-{job.id}", "elements": upscale})
    if count == 1:
        blocks.extend(edit_blocks(job.id))
    hint = (
        "V = variations of that image, U = upscale it; or react :one:–:four:"
        if count > 1
        else "or react :repeat: for variations"
    )
    blocks.append(context(hint + ", :x: removes it."))
    return replies.shorten(caption, SECTION_LIMIT), blocks


def edit_blocks(job_id: int, index: int = 1) -> list[dict[str, Any]]:
    """Under a single image: Vary (Region) (it opens a form), Zoom Out 2×, then the four pans.
    Not under a grid, as on Discord: more buttons per image would bury V1–V4 and U1–U4 (upscale
    one first, then edit it)."""
    edits = [
        button("🖌️ Vary (Region)", f"region:{index}", job_id),
        button("🔍 Zoom Out 2×", f"zoomout:{index}", job_id),
    ]
    pans = [button(arrow, f"pan:{index}:{way}", job_id, spoken=spoken) for way, arrow, spoken in PANS]
    return [
        {"type": "actions", "block_id": f"imagine-edit-{job_id}", "elements": edits},
        {"type": "actions", "block_id": f"imagine-pan-{job_id}", "elements": pans},
    ]


def outcome_message(job: GenerationView) -> tuple[str, list[dict]]:
    """A job that ended without images (failed or cancelled): its status, no buttons."""
    text = replies.job_status(job, None, escape)
    return text, [section(text), context(f"requested by {requester(job)}")]
