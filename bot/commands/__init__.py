"""Commands: their typed values (`types`) and the one text parser for every text front-end
(`parser`). `from bot import commands as c` gives both: `c.Imagine`, `c.parse_command`."""

from bot.commands.admin import parse_admin, parse_target, parse_user
from bot.commands.parser import (
    MAX_COMMAND_CHARS,
    Limits,
    parse_command,
    parse_image_ref,
    parse_imagine_text,
    parse_job_ref,
)
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
    Blend,
    Cancel,
    Command,
    Edit,
    Gallery,
    Help,
    History,
    Imagine,
    Quota,
    Reroll,
    Thread,
    Upscale,
    Vary,
)

__all__ = [
    "MAX_COMMAND_CHARS", "USAGE", "AdminAudit", "AdminBan", "AdminBlockTerm", "AdminModRole", "AdminQuota",
    "AdminRetention", "AdminStats", "AdminUnban", "AdminUnblockTerm", "Blend", "Cancel", "Command", "Edit", "Gallery",
    "Help", "History", "Imagine", "Limits", "Quota", "Reroll", "Thread", "Upscale", "Vary", "parse_admin",
    "parse_command", "parse_image_ref", "parse_imagine_text", "parse_job_ref", "parse_target", "parse_user",
]
