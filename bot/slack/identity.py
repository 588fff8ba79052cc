"""Who a Slack user is, as the service needs to know: their name, whether they are a workspace
admin or owner, and which user groups they are in (the service's roles). Looked up with
users.info and usergroups.list, and remembered briefly so a burst of commands costs one lookup.

No permission rule lives here: the service decides what an admin or a group member may do.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack.web import api_error
from engine.domain.types import Actor, Platform

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SlackUser:
    name: str
    is_admin: bool


class SlackDirectory:
    def __init__(self, client: AsyncWebClient, *, cache_s: float = 60.0) -> None:
        self.client = client
        self.cache_s = cache_s
        self._users: dict[tuple[str, str], tuple[float, SlackUser]] = {}
        self._groups: dict[str, tuple[float, dict[str, tuple[str, ...]]]] = {}

    async def actor(self, team_id: str, user_id: str, *, team_name: str = "") -> Actor:
        """The neutral Actor for a Slack user of a workspace."""
        user = await self.user(team_id, user_id)
        groups = await self.groups(team_id)
        return Actor(
            Platform.SLACK,
            team_id=team_id,
            user_id=user_id,
            user_name=user.name,
            team_name=team_name,
            role_ids=groups.get(user_id, ()),
            is_platform_admin=user.is_admin,
        )

    async def user(self, team_id: str, user_id: str) -> SlackUser:
        key = (team_id, user_id)
        cached = self._users.get(key)
        if cached and cached[0] > time.monotonic():
            return cached[1]
        try:
            response = await self.client.users_info(user=user_id)
        except SlackApiError as error:
            # Fail closed and do not remember it: no admin rights until Slack answers again.
            log.warning("users.info %s failed (%s): treating them as a member", user_id, api_error(error))
            return SlackUser(user_id, False)
        data = response["user"]
        profile = data.get("profile") or {}
        name = profile.get("display_name") or data.get("real_name") or data.get("name") or user_id
        # The name is shown in messages and audit entries; angle brackets are the only way to
        # smuggle a mention into mrkdwn, so they never get that far.
        name = name.replace("<", "").replace(">", "")
        is_admin = bool(data.get("is_admin") or data.get("is_owner") or data.get("is_primary_owner"))
        user = SlackUser(name, is_admin)
        self._users[key] = (time.monotonic() + self.cache_s, user)
        return user

    async def groups(self, team_id: str) -> dict[str, tuple[str, ...]]:
        """user id → the ids of the user groups (subteams) they are in."""
        cached = self._groups.get(team_id)
        if cached and cached[0] > time.monotonic():
            return cached[1]
        members: dict[str, list[str]] = {}
        try:
            response = await self.client.usergroups_list(include_users=True)
            for group in response.get("usergroups") or []:
                for user_id in group.get("users") or []:
                    members.setdefault(user_id, []).append(group["id"])
        except SlackApiError as error:
            # Free workspaces have no user groups (and a missing usergroups:read scope says the
            # same): nobody is in one. Remembered like an answer, so it is not asked every time.
            log.warning("usergroups.list failed (%s): no user groups", api_error(error))
        result = {user: tuple(sorted(ids)) for user, ids in members.items()}
        self._groups[team_id] = (time.monotonic() + self.cache_s, result)
        return result
