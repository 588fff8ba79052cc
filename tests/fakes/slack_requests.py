"""Requests as Slack sends them to an app, for driving a bolt app over HTTP (or Socket Mode)
the way Slack does: the signature headers (`sign`: v0 HMAC-SHA256 over `v0:timestamp:body`, from
Slack's "Verifying requests from Slack"), and the bodies of slash commands, button presses
(`block_actions`), modal submissions (`view_submission`) and Events API callbacks — in the shapes
of Slack's reference for each payload.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from typing import Any
from urllib.parse import urlencode

from tests.fakes.slack import BOT_USER, TEAM

SIGNING_SECRET = "fake-signing-secret"


def sign(body: str, secret: str = SIGNING_SECRET, timestamp: int | None = None) -> dict[str, str]:
    """The headers Slack adds to every HTTP request: timestamp and v0 HMAC-SHA256 signature."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}"}


def slash_command(
    command: str,
    text: str,
    *,
    user: str,
    channel: str = "C1",
    team: str = TEAM,
    response_url: str = "",
    trigger_id: str = "",
) -> dict[str, str]:
    return {
        "token": "legacy",
        "team_id": team,
        "team_domain": "fake",
        "channel_id": channel,
        "channel_name": "general",
        "user_id": user,
        "user_name": user.lower(),
        "command": command,
        "text": text,
        "api_app_id": "AFAKE",
        "is_enterprise_install": "false",
        "response_url": response_url,
        "trigger_id": trigger_id or uuid.uuid4().hex,
    }


def form_body(fields: dict[str, str]) -> str:
    return urlencode(fields)


def block_action(
    action_id: str, value: str, *, user: str, channel: str, message_ts: str, response_url: str, team: str = TEAM
) -> dict[str, str]:
    """The form body of a button press (`payload=<json>`)."""
    payload = {
        "type": "block_actions",
        "api_app_id": "AFAKE",
        "token": "legacy",
        "team": {"id": team, "domain": "fake"},
        "user": {"id": user, "username": user.lower(), "team_id": team},
        "channel": {"id": channel, "name": "general"},
        "container": {"type": "message", "message_ts": message_ts, "channel_id": channel},
        "message": {"type": "message", "ts": message_ts, "user": BOT_USER},
        "response_url": response_url,
        "trigger_id": uuid.uuid4().hex,
        "actions": [
            {"type": "button", "action_id": action_id, "block_id": "b", "value": value, "action_ts": str(time.time())}
        ],
    }
    return {"payload": json.dumps(payload)}


def view_submission(
    view: dict[str, Any],
    answers: dict[str, str | None],
    *,
    user: str,
    team: str = TEAM,
    values: dict[str, Any] | None = None,
) -> dict[str, str]:
    """The form body of a submitted modal (`payload=<json>`): `view` as views.open opened it (its
    callback_id and private_metadata come back as they were), with `state.values` as Slack fills
    them in — every input block, `{block_id: {action_id: state}}`: a static_select's
    `selected_option` (null when nothing is chosen), a plain_text_input's `value` (null when
    empty). `answers` by block id; `values` replaces the state outright (a forged one)."""
    if values is None:
        values = {}
        for block in view.get("blocks", []):
            if block.get("type") != "input":
                continue
            element, answer = block["element"], answers.get(block["block_id"])
            if element["type"] == "static_select":
                chosen = next((o for o in element["options"] if o["value"] == answer), None)
                state = {"type": "static_select", "selected_option": chosen}
            else:
                state = {"type": element["type"], "value": answer or None}
            values[block["block_id"]] = {element["action_id"]: state}
    payload = {
        "type": "view_submission",
        "team": {"id": team, "domain": "fake"},
        "user": {"id": user, "username": user.lower(), "name": user.lower(), "team_id": team},
        "api_app_id": "AFAKE",
        "token": "legacy",
        "trigger_id": uuid.uuid4().hex,
        "view": {**view, "state": {"values": values}},
        "response_urls": [],
        "is_enterprise_install": False,
        "enterprise": None,
    }
    return {"payload": json.dumps(payload)}


def reaction_event(
    reaction: str,
    *,
    user: str,
    channel: str,
    ts: str,
    event_id: str | None = None,
    team: str = TEAM,
    item_user: str = BOT_USER,
) -> dict[str, Any]:
    """An Events API body: `user` reacted to the message `ts` that `item_user` posted."""
    return {
        "token": "legacy",
        "team_id": team,
        "api_app_id": "AFAKE",
        "type": "event_callback",
        "event_id": event_id or "Ev" + uuid.uuid4().hex[:10].upper(),
        "event_time": int(time.time()),
        "event": {
            "type": "reaction_added",
            "user": user,
            "reaction": reaction,
            "item": {"type": "message", "channel": channel, "ts": ts},
            "item_user": item_user,
            "event_ts": f"{time.time():.6f}",
        },
        "authorizations": [{"team_id": team, "user_id": BOT_USER, "is_bot": True}],
    }
