"""mrkdwn escaping and the Block Kit messages (no Slack needed)."""

from __future__ import annotations

from datetime import datetime

import pytest

from bot.slack.blocks import ButtonPress, escape, outcome_message, parse_action, progress_message, result_message
from engine.domain.types import GenerationKind, GenerationStatus, Platform
from engine.domain.views import GenerationView, ImageView


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("a red star", "a red star"),
        ("<!everyone> look", "&lt;!everyone&gt; look"),
        ("<!channel>", "&lt;!channel&gt;"),
        ("<@U123> and <@U9|bob>", "&lt;@U123&gt; and &lt;@U9|bob&gt;"),
        ("<!subteam^S1|@team>", "&lt;!subteam^S1|@team&gt;"),
        ("<https://evil.example|click>", "&lt;https://evil.example|click&gt;"),
        ("fish & chips", "fish &amp; chips"),
        ("&lt;!here&gt;", "&amp;lt;!here&amp;gt;"),
        ("hey @here and @Channel", "hey @\u2060here and @\u2060Channel"),
        ("mail me@hereford.example", "mail me@hereford.example"),
    ],
)
def test_escape(text, shown):
    """User text becomes inert mrkdwn: no mention, broadcast, link or entity survives."""
    assert escape(text) == shown


@pytest.mark.parametrize(
    ("action_id", "value", "press"),
    [
        ("imagine:vary:2", "12", ButtonPress("vary", 12, 2)),
        ("imagine:upscale:4", "7", ButtonPress("upscale", 7, 4)),
        ("imagine:reroll", "7", ButtonPress("reroll", 7, None)),
        ("imagine:cancel", "9", ButtonPress("cancel", 9, None)),
        ("imagine:region:1", "12", ButtonPress("region", 12, 1)),
        ("imagine:zoomout:1", "12", ButtonPress("zoomout", 12, 1)),
        ("imagine:pan:1:left", "12", ButtonPress("pan", 12, 1, "left")),
        ("imagine:pan:2:down", "12", ButtonPress("pan", 12, 2, "down")),
        ("imagine:vary:5", "12", None),
        ("someone-else:vary:1", "12", None),
        # An edit always says which image, a pan also which way; nothing else is one of ours.
        ("imagine:region", "12", None),
        ("imagine:zoomout", "12", None),
        ("imagine:pan:1", "12", None),
        ("imagine:pan:left", "12", None),
        ("imagine:pan:1:sideways", "12", None),
        ("imagine:pan:1:left:2", "12", None),
        ("imagine:vary:1:left", "12", None),
        ("imagine:zoomout:1:left", "12", None),
        ("imagine:pan:1:LEFT", "12", None),
        ("imagine:pan:1:left\n", "12", None),
    ],
)
def test_parse_action(action_id, value, press):
    """A button's meaning comes from its action id and value; anything else is not ours."""
    assert parse_action(action_id, value) == press


@pytest.mark.parametrize("value", ["12; drop", "²", "١٢", "", "-3", "0", "99999999999999999999", "1e3"])
def test_parse_action_refuses_values_no_button_of_ours_carries(value):
    """One of our action ids with a value that is not a job number we could have made is
    refused with a message (the presser is told), never read as some other number."""
    from engine.domain.errors import UserFacingError

    with pytest.raises(UserFacingError):
        parse_action("imagine:vary:1", value)


def job(status=GenerationStatus.DONE, kind=GenerationKind.IMAGINE, images=4, prompt="a <!here> cat"):
    now = datetime(2026, 1, 1)
    return GenerationView(
        id=5,
        kind=kind,
        status=status,
        platform=Platform.SLACK,
        team_external_id="T1",
        requester_external_id="U1",
        requester_name="Al <@U2>",
        prompt=prompt,
        negative_prompt=None,
        params={},
        seed=3,
        model_id="builtin",
        parent_generation_id=None,
        parent_image_index=None,
        thread_root_id=None,
        reply_target={"channel": "C1"},
        progress=0.5,
        stage=None,
        error="boom" if status == GenerationStatus.FAILED else None,
        cost=images,
        created_at=now,
        started_at=None,
        finished_at=None,
        delivered_at=None,
        grid_key=None,
        images=tuple(ImageView(i, 5, i, f"k{i}", 8, 8, 3) for i in range(1, images + 1)),
    )


def buttons(blocks):
    return [e["action_id"] for b in blocks if b["type"] == "actions" for e in b["elements"]]


def test_result_buttons_follow_the_grid():
    """Result buttons match the grid: V/U per image and Reroll; an upscale can only be varied."""
    _, four = result_message(job())
    assert buttons(four) == [
        "imagine:vary:1",
        "imagine:vary:2",
        "imagine:vary:3",
        "imagine:vary:4",
        "imagine:reroll",
        "imagine:upscale:1",
        "imagine:upscale:2",
        "imagine:upscale:3",
        "imagine:upscale:4",
    ]
    _, one = result_message(job(images=1))
    assert buttons(one) == ["imagine:vary:1", "imagine:reroll", "imagine:upscale:1", *SINGLE_IMAGE_EDITS]
    _, upscaled = result_message(job(kind=GenerationKind.UPSCALE, images=1))
    assert buttons(upscaled) == ["imagine:vary:1", *SINGLE_IMAGE_EDITS]


SINGLE_IMAGE_EDITS = [
    "imagine:region:1",
    "imagine:zoomout:1",
    "imagine:pan:1:left",
    "imagine:pan:1:right",
    "imagine:pan:1:up",
    "imagine:pan:1:down",
]


def test_a_single_image_has_edit_buttons_within_block_kit_limits():
    """Vary (Region) and Zoom Out in one row, the pans (arrows a screen reader names) in the
    next; every id and label within Block Kit's limits, every id one the listener takes."""
    from bot.slack.blocks import ACTION_PATTERN
    from engine.domain.edits import PAN_DIRECTIONS
    from tests.fakes.block_kit import check_message_blocks

    _, blocks = result_message(job(kind=GenerationKind.UPSCALE, images=1))
    assert check_message_blocks(blocks) == []
    edits, pans = (b for b in blocks if b.get("block_id", "").startswith(("imagine-edit-", "imagine-pan-")))
    assert [e["text"]["text"] for e in edits["elements"]] == ["🖌️ Vary (Region)", "🔍 Zoom Out 2×"]
    assert [e["text"]["text"] for e in pans["elements"]] == ["⬅️", "➡️", "⬆️", "⬇️"]
    assert [e["accessibility_label"] for e in pans["elements"]] == [f"Pan {d}" for d in PAN_DIRECTIONS]
    for element in edits["elements"] + pans["elements"]:
        assert element["value"] == "5" and ACTION_PATTERN.match(element["action_id"])
        assert parse_action(element["action_id"], element["value"]) is not None


def test_status_message_has_cancel_only_while_it_can_be_cancelled():
    """Queued and running jobs get a Cancel button; failed ones get none; names are escaped."""
    text, queued = progress_message(job(GenerationStatus.QUEUED), 2)
    assert text == '#5 imagine "a &lt;!here&gt; cat": queued, position 2 in the queue.'
    assert buttons(queued) == ["imagine:cancel"]
    assert "requested by Al &lt;@U2&gt;" in str(queued)
    assert buttons(progress_message(job(GenerationStatus.RUNNING))[1]) == ["imagine:cancel"]
    text, failed = outcome_message(job(GenerationStatus.FAILED))
    assert buttons(failed) == [] and "failed: boom" in text


def test_long_prompts_fit_a_section():
    """Section text stays within Slack's 3000 characters however long the caption."""
    _, blocks = result_message(job(prompt="x" * 5000))
    assert all(len(b["text"]["text"]) <= 3000 for b in blocks if b["type"] == "section")
