"""`/imagine-admin …`: moderators' commands in text form (console and Slack; Discord's typed
options build the same commands directly), one small parser each, and how users, roles and the
team are named in them."""

from __future__ import annotations

import re
from collections.abc import Callable

from bot.commands.types import (
    USAGE,
    AdminAudit,
    AdminBan,
    AdminBlockTerm,
    AdminModRole,
    AdminQuota,
    AdminRetention,
    AdminStats,
    AdminUnban,
    AdminUnblockTerm,
    Command,
)
from engine.domain import limits as bounds
from engine.domain.errors import UsageError
from engine.domain.types import QuotaTarget

_USER_MENTION = re.compile(r"^<@!?([A-Z0-9]+)(?:\|[^>]*)?>$", re.IGNORECASE)
_ROLE_MENTION = re.compile(r"^<(?:@&|!subteam\^)([A-Z0-9]+)(?:\|[^>]*)?>$", re.IGNORECASE)


def parse_target(text: str) -> QuotaTarget:
    """A user (`@alice`, `<@U123>`), a role (`@&mods`, `<@&123>`, `<!subteam^S1>`) or `team`."""
    text = text.strip()
    if text.lower() in ("team", "everyone", "@everyone", "default"):
        return QuotaTarget("team")
    if match := _ROLE_MENTION.match(text):
        return QuotaTarget("role", bounds.external_id(match.group(1), what="That role"))
    if match := _USER_MENTION.match(text):
        return QuotaTarget("user", bounds.external_id(match.group(1), what="That user"))
    for prefix, kind in (("@&", "role"), ("role:", "role"), ("user:", "user"), ("@", "user")):
        if text.lower().startswith(prefix) and len(text) > len(prefix):
            return QuotaTarget(kind, bounds.external_id(text[len(prefix) :], what=f"That {kind}"))
    raise UsageError(f"{text!r} is not a user, role or team; use @user, @&role (a mention works too) or team.")


def parse_user(text: str) -> str:
    target = parse_target(text)
    if target.kind != "user":
        raise UsageError(f"{text!r} is not a user; mention one, e.g. @alice.")
    return target.subject


def _admin_quota(rest: list[str]) -> Command:
    if not rest or rest[0].lower() not in ("set", "grant", "reset"):
        raise UsageError(
            "Use `quota set <target> <N|unlimited>`, `quota grant <target> <N>` or `quota reset <target>`."
        )
    verb = rest[0].lower()
    if len(rest) < 2:
        raise UsageError(f"Say whose quota to {verb}: @user, @&role or team.")
    target = parse_target(rest[1])
    if verb == "reset":
        if len(rest) > 2:
            raise UsageError("`quota reset` takes only a target.")
        return AdminQuota("reset", target)
    if len(rest) != 3:
        raise UsageError(f"Use `quota {verb} <target> <N{'|unlimited' if verb == 'set' else ''}>`.")
    amount_text = rest[2].lower()
    if verb == "set" and amount_text in ("unlimited", "none", "∞"):
        return AdminQuota("set", target, None)
    amount = bounds.whole_number(amount_text, what="The number of images", low=0, high=10**40)
    if amount > bounds.MAX_QUOTA_IMAGES:
        raise UsageError(f"{amount} images is more than the {bounds.MAX_QUOTA_IMAGES:,} a quota can hold.")
    if verb == "grant" and amount == 0:
        raise UsageError("Grant at least 1 image.")
    return AdminQuota(verb, target, amount)


def _admin_ban(rest: list[str]) -> Command:
    if not rest:
        raise UsageError("Say whom to ban, e.g. `ban @alice`.")
    reason = " ".join(rest[1:]) or None
    if reason and len(reason) > bounds.MAX_BAN_REASON_CHARS:
        raise UsageError(f"The ban reason can be at most {bounds.MAX_BAN_REASON_CHARS} characters.")
    return AdminBan(parse_user(rest[0]), reason)


def _admin_unban(rest: list[str]) -> Command:
    if not rest:
        raise UsageError("Say whom to unban, e.g. `unban @alice`.")
    if len(rest) > 1:
        raise UsageError("`unban` takes only the user.")
    return AdminUnban(parse_user(rest[0]))


def _admin_term(action: str, make: Callable[[str], Command]) -> Callable[[list[str]], Command]:
    def parse(rest: list[str]) -> Command:
        term = " ".join(rest)
        if not term:
            raise UsageError(f"Say which term, e.g. `{action} gore`.")
        return make(term)

    return parse


def _admin_count(
    action: str, what: str, limits_: tuple[int, int], make: Callable[..., Command]
) -> Callable[[list[str]], Command]:
    def parse(rest: list[str]) -> Command:
        if not rest:
            return make()
        low, high = limits_
        if len(rest) > 1 or not bounds.is_whole_number(rest[0], low=low, high=high):
            raise UsageError(f"`{action}` takes how many {what}, {low} to {high}.")
        return make(int(rest[0]))

    return parse


def _admin_retention(rest: list[str]) -> Command:
    if len(rest) != 1:
        raise UsageError("Use `retention <days>`, `retention forever` or `retention default`.")
    word = rest[0].lower()
    if word in ("forever", "off", "0"):
        return AdminRetention(0)
    if word == "default":
        return AdminRetention(None)
    high = bounds.RETENTION_DAYS[1]
    if not bounds.is_whole_number(word, low=1, high=high):
        raise UsageError(f"Retention is a number of days from 1 to {high}, got {rest[0][:40]!r}.")
    return AdminRetention(int(word))


def _admin_mod_role(rest: list[str]) -> Command:
    if len(rest) != 2 or rest[0].lower() not in ("add", "remove"):
        raise UsageError("Use `mod-role add <@&role>` or `mod-role remove <@&role>`.")
    target = parse_target(rest[1])
    if target.kind != "role":
        raise UsageError(f"{rest[1]!r} is not a role; use @&role or a role mention.")
    return AdminModRole(target.subject, rest[0].lower() == "add")


_ADMIN: dict[str, Callable[[list[str]], Command]] = {
    "quota": _admin_quota,
    "ban": _admin_ban,
    "unban": _admin_unban,
    "block-term": _admin_term("block-term", AdminBlockTerm),
    "unblock-term": _admin_term("unblock-term", AdminUnblockTerm),
    "audit": _admin_count("audit", "entries to show", bounds.AUDIT_ENTRIES, AdminAudit),
    "stats": _admin_count("stats", "days to cover", bounds.STATS_DAYS, AdminStats),
    "retention": _admin_retention,
    "mod-role": _admin_mod_role,
}


def parse_admin(words: list[str]) -> Command:
    if not words:
        raise UsageError(f"Say which admin command to run:\n{USAGE}")
    parse = _ADMIN.get(words[0].lower())
    if parse is None:
        raise UsageError(f"Unknown admin command {words[0]!r}. Admin commands: {', '.join(_ADMIN)}.")
    return parse(words[1:])
