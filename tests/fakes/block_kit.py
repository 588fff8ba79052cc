"""What Slack checks in Block Kit before it takes a message or opens a modal, for the fake Slack
(tests/fakes/slack.py): the limits of Slack's reference (docs.slack.dev/reference/block-kit,
/reference/views) for the blocks and elements imagine-bot sends. Each check returns what is
wrong, in the `[ERROR] …` style of Slack's `response_metadata.messages`; an empty list means
Slack would take it."""

from __future__ import annotations

from typing import Any

MAX_MESSAGE_BLOCKS = 50
MAX_VIEW_BLOCKS = 100
MAX_ACTIONS_ELEMENTS = 25
MAX_ID = 255  # action_id, block_id, callback_id
MAX_BUTTON_TEXT = 75
MAX_BUTTON_VALUE = 2000
MAX_VIEW_TITLE = 24  # also the submit and close buttons' text
MAX_PRIVATE_METADATA = 3000
MAX_LABEL = 2000
MAX_OPTIONS = 100
MAX_OPTION_TEXT = 75
MAX_OPTION_VALUE = 150
MAX_TEXT_INPUT = 3000


def check_message_blocks(blocks: list[Any]) -> list[str]:
    """A message's blocks (chat.postMessage, chat.update)."""
    if not isinstance(blocks, list):
        return ["[ERROR] must be an array [json-pointer:/blocks]"]
    problems = [f"[ERROR] must contain at most {MAX_MESSAGE_BLOCKS} blocks"] if len(blocks) > MAX_MESSAGE_BLOCKS else []
    for i, block in enumerate(blocks):
        problems += _check_block(block, f"/blocks/{i}")
    return problems


def check_view(view: Any) -> list[str]:
    """A modal (views.open)."""
    if not isinstance(view, dict):
        return ["[ERROR] must be an object [json-pointer:/view]"]
    problems = []
    if view.get("type") != "modal":
        problems.append("[ERROR] must be one of modal, home [json-pointer:/view/type]")
    problems += _check_plain_text(view.get("title"), MAX_VIEW_TITLE, "/view/title", required=True)
    for button in ("submit", "close"):
        problems += _check_plain_text(view.get(button), MAX_VIEW_TITLE, f"/view/{button}", required=False)
    if not isinstance(view.get("callback_id", ""), str) or len(view.get("callback_id", "")) > MAX_ID:
        problems.append(f"[ERROR] must be a string of at most {MAX_ID} characters [json-pointer:/view/callback_id]")
    metadata = view.get("private_metadata", "")
    if not isinstance(metadata, str) or len(metadata) > MAX_PRIVATE_METADATA:
        problems.append(
            f"[ERROR] must be a string of at most {MAX_PRIVATE_METADATA} characters "
            "[json-pointer:/view/private_metadata]"
        )
    blocks = view.get("blocks")
    if not isinstance(blocks, list) or not blocks or len(blocks) > MAX_VIEW_BLOCKS:
        return [*problems, f"[ERROR] must contain 1 to {MAX_VIEW_BLOCKS} blocks [json-pointer:/view/blocks]"]
    block_ids = [b.get("block_id") for b in blocks if isinstance(b, dict) and b.get("block_id")]
    if len(block_ids) != len(set(block_ids)):
        problems.append("[ERROR] block_id must be unique [json-pointer:/view/blocks]")
    for i, block in enumerate(blocks):
        where = f"/view/blocks/{i}"
        problems += _check_block(block, where)
        if isinstance(block, dict) and block.get("type") == "input" and "submit" not in view:
            problems.append(f"[ERROR] must define submit to use input block [json-pointer:{where}/input]")
    return problems


def _check_block(block: Any, where: str) -> list[str]:
    if not isinstance(block, dict) or not isinstance(block.get("type"), str):
        return [f"[ERROR] must be a block object [json-pointer:{where}]"]
    problems = _check_id(block, "block_id", where)
    if block["type"] == "actions":
        elements = block.get("elements")
        if not isinstance(elements, list) or not 1 <= len(elements) <= MAX_ACTIONS_ELEMENTS:
            return [*problems, f"[ERROR] must contain 1 to {MAX_ACTIONS_ELEMENTS} elements [json-pointer:{where}]"]
        action_ids = [e.get("action_id") for e in elements if isinstance(e, dict) and e.get("action_id")]
        if len(action_ids) != len(set(action_ids)):
            problems.append(f"[ERROR] action_id must be unique in a block [json-pointer:{where}/elements]")
        for j, element in enumerate(elements):
            problems += _check_element(element, f"{where}/elements/{j}")
    elif block["type"] == "input":
        problems += _check_plain_text(block.get("label"), MAX_LABEL, f"{where}/label", required=True)
        problems += _check_plain_text(block.get("hint"), MAX_LABEL, f"{where}/hint", required=False)
        problems += _check_element(block.get("element"), f"{where}/element")
    return problems


def _check_element(element: Any, where: str) -> list[str]:
    if not isinstance(element, dict):
        return [f"[ERROR] must be an element object [json-pointer:{where}]"]
    problems = _check_id(element, "action_id", where)
    kind = element.get("type")
    if kind == "button":
        problems += _check_plain_text(element.get("text"), MAX_BUTTON_TEXT, f"{where}/text", required=True)
        if len(str(element.get("value", ""))) > MAX_BUTTON_VALUE:
            problems.append(f"[ERROR] must be at most {MAX_BUTTON_VALUE} characters [json-pointer:{where}/value]")
        if len(str(element.get("accessibility_label", ""))) > MAX_BUTTON_TEXT:
            problems.append(
                f"[ERROR] must be at most {MAX_BUTTON_TEXT} characters [json-pointer:{where}/accessibility_label]"
            )
    elif kind == "static_select":
        options = element.get("options")
        if not isinstance(options, list) or not 1 <= len(options) <= MAX_OPTIONS:
            return [*problems, f"[ERROR] must contain 1 to {MAX_OPTIONS} options [json-pointer:{where}/options]"]
        for k, option in enumerate(options):
            option = option if isinstance(option, dict) else {}
            problems += _check_plain_text(option.get("text"), MAX_OPTION_TEXT, f"{where}/options/{k}/text", True)
            if not isinstance(option.get("value"), str) or len(option["value"]) > MAX_OPTION_VALUE:
                problems.append(
                    f"[ERROR] must be at most {MAX_OPTION_VALUE} characters [json-pointer:{where}/options/{k}]"
                )
    elif kind == "plain_text_input":
        length = element.get("max_length", MAX_TEXT_INPUT)
        if not isinstance(length, int) or not 1 <= length <= MAX_TEXT_INPUT:
            problems.append(f"[ERROR] must be 1 to {MAX_TEXT_INPUT} [json-pointer:{where}/max_length]")
    elif kind not in ("image", "overflow", "datepicker", "checkboxes", "radio_buttons"):
        problems.append(f"[ERROR] unknown element type {kind!r} [json-pointer:{where}/type]")
    return problems


def _check_id(thing: dict, key: str, where: str) -> list[str]:
    value = thing.get(key)
    if value is None:
        return []
    if not isinstance(value, str) or not 1 <= len(value) <= MAX_ID:
        return [f"[ERROR] must be 1 to {MAX_ID} characters [json-pointer:{where}/{key}]"]
    return []


def _check_plain_text(text: Any, limit: int, where: str, required: bool) -> list[str]:
    if text is None:
        return [f"[ERROR] missing required field [json-pointer:{where}]"] if required else []
    if not isinstance(text, dict) or text.get("type") != "plain_text" or not isinstance(text.get("text"), str):
        return [f"[ERROR] must be a plain_text object [json-pointer:{where}]"]
    if not 1 <= len(text["text"]) <= limit:
        return [f"[ERROR] must be 1 to {limit} characters [json-pointer:{where}/text]"]
    return []
