"""The Vary (Region) form on Slack: a modal asking which part of an image to redraw, and from what.

A single image's 🖌️ button opens it (`views.open`). Its `callback_id` says which image
(`imagine:region:12:1`) and its `private_metadata` which channel to answer in, so a submission is
read from the submitted view alone — `callback_id`, `state.values`, `private_metadata` — and is
answered the same by a replica that never saw the form opened, or by the bot after a restart.

Inputs are checked when the form is sent, before the ack: a bad one is refused with
`response_action: "errors"` under its own field (the form stays open, nothing is charged).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from bot import replies
from engine.domain import limits
from engine.domain.edits import REGION_NAMES, EditSpec, region_edit
from engine.domain.errors import UsageError

FORM_ID = re.compile(r"^imagine:region:(?P<job>[0-9]{1,12}):(?P<index>[1-4])\Z")
_CHANNEL = re.compile(r"[A-Z0-9]{1,40}")
MAX_BOX_CHARS = 40  # "0.25,0.25,0.5,0.5" needs 17
MAX_INPUT_CHARS = 3000  # Slack's cap on a plain_text_input's max_length
MAX_ERROR_CHARS = 150  # an error shown under a field: a sentence, not an essay
#: The block (and action) ids of the form's three inputs; an error names its block.
REGION, BOX, PROMPT = "region", "box", "prompt"


@dataclass(frozen=True)
class RegionForm:
    """A submitted form that can be drawn: which image, which part, from what prompt, and where
    to answer."""

    job_id: int
    index: int
    spec: EditSpec
    prompt: str
    channel: str


class FormError(Exception):
    """Why a submitted form cannot be drawn: `errors` maps a block id to what to fix there."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__(errors)
        self.errors = errors


def region_form(job_id: int, index: int, channel: str, *, max_prompt_chars: int) -> dict[str, Any]:
    """The modal for redrawing part of image `index` of job `job_id`, answered in `channel`."""
    regions = [{"text": {"type": "plain_text", "text": name}, "value": name} for name in REGION_NAMES]
    return {
        "type": "modal",
        "callback_id": f"imagine:region:{job_id}:{index}",
        # The title's cap is 24 characters: the job and image go in the first block instead.
        "title": {"type": "plain_text", "text": "Vary (Region)"},
        "submit": {"type": "plain_text", "text": "Redraw"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "private_metadata": json.dumps({"channel": channel}),
        "blocks": [
            {
                "type": "context",
                "elements": [
                    {"type": "mrkdwn", "text": f"Redraw part of image {index} of #{job_id}; the rest stays as it is."}
                ],
            },
            _input(
                REGION,
                "Region",
                {"type": "static_select", "placeholder": _text("Which part to redraw"), "options": regions},
                optional=True,
            ),
            _input(
                BOX,
                "Or a box X,Y,W,H",
                {"type": "plain_text_input", "max_length": MAX_BOX_CHARS, "placeholder": _text("0.5,0,0.5,1")},
                optional=True,
                hint="Fractions of the image, e.g. 0.5,0,0.5,1 for the right half",
            ),
            _input(
                PROMPT,
                "Prompt",
                {"type": "plain_text_input", "multiline": True, "max_length": min(max_prompt_chars, MAX_INPUT_CHARS)},
                hint="What to draw there",
            ),
        ],
    }


def read_region_form(view: Any) -> RegionForm:
    """A submitted view's answers, checked; FormError (by block) when one cannot be drawn.
    Anything garbled or forged is refused the same way, never raised as something else."""
    view = view if isinstance(view, dict) else {}
    target = FORM_ID.match(str(view.get("callback_id") or ""))
    channel = _channel(view.get("private_metadata"))
    if target is None or channel is None:
        # Not a form this bot made: nothing to draw, and nowhere to say so but the form.
        raise FormError({PROMPT: "This form cannot be answered: press Vary (Region) under the image again."})
    try:
        job_id = limits.job_id(int(target["job"]))
    except UsageError as error:
        raise FormError({PROMPT: error.message}) from None
    values = (view.get("state") or {}).get("values")
    values = values if isinstance(values, dict) else {}
    region = _chosen(values, REGION)
    box = (_typed(values, BOX) or "").strip() or None
    prompt = (_typed(values, PROMPT) or "").strip()
    if region is not None and region not in REGION_NAMES:  # the menu offers no other: forged
        raise FormError({REGION: f"Choose one of {', '.join(REGION_NAMES)}."})
    try:
        spec = region_edit(region, box)
    except UsageError as error:
        # A bad box names the box; neither or both (or a forged region) names the menu.
        field = BOX if box is not None and region is None else REGION
        raise FormError({field: replies.shorten(error.message, MAX_ERROR_CHARS)}) from None
    if not prompt:
        raise FormError({PROMPT: "Say what to draw there."})
    return RegionForm(job_id, int(target["index"]), spec, prompt, channel)


def _input(
    block_id: str, label: str, element: dict[str, Any], *, optional: bool = False, hint: str | None = None
) -> dict[str, Any]:
    block: dict[str, Any] = {
        "type": "input",
        "block_id": block_id,
        "label": _text(label),
        "element": {**element, "action_id": block_id},
        "optional": optional,
    }
    if hint:
        block["hint"] = _text(hint)
    return block


def _text(text: str) -> dict[str, str]:
    return {"type": "plain_text", "text": text}


def _channel(metadata: Any) -> str | None:
    try:
        channel = json.loads(metadata).get("channel") if isinstance(metadata, str) else None
    except (ValueError, AttributeError):
        return None
    return channel if isinstance(channel, str) and _CHANNEL.fullmatch(channel) else None


def _state(values: dict[str, Any], block_id: str) -> dict[str, Any]:
    """One input's state: `values[block_id][action_id]` (the form uses one id for both)."""
    block = values.get(block_id)
    state = block.get(block_id) if isinstance(block, dict) else None
    return state if isinstance(state, dict) else {}


def _chosen(values: dict[str, Any], block_id: str) -> str | None:
    """A static_select's value (Slack sends `selected_option: null` when nothing is chosen)."""
    option = _state(values, block_id).get("selected_option")
    value = option.get("value") if isinstance(option, dict) else None
    return value if isinstance(value, str) and value else None


def _typed(values: dict[str, Any], block_id: str) -> str | None:
    """A plain_text_input's text (Slack sends `value: null` when it was left empty)."""
    value = _state(values, block_id).get("value")
    return value if isinstance(value, str) else None
