"""Every bound on what a request may name or ask for, in one place.

The text parser, the Discord option declarations, the Slack button parser and the service read
these; the schema is why some of them are what they are (a job id is a PostgreSQL INTEGER, an
external id a VARCHAR(64)). Numbers from users go through `whole_number`, which accepts ASCII
digits only: `str.isdigit()` says yes to "²" and "٣", which `int()` then refuses or reads as
something the user did not type.
"""

from __future__ import annotations

import re

from engine.domain.errors import UsageError

#: Job and image ids are PostgreSQL INTEGER columns.
MAX_ID = 2**31 - 1
#: Seeds are stored as BIGINT but drawn as 32-bit (what torch generators and users expect).
MAX_SEED = 2**32 - 1
#: Team, user and role ids from the platforms (teams.external_id, users.external_id: VARCHAR(64)).
MAX_EXTERNAL_ID_CHARS = 64
MAX_IMAGES_PER_JOB = 4
#: History pages (page × page size must stay far inside a 64-bit offset).
MAX_HISTORY_PAGE = 100_000
AUDIT_ENTRIES = (1, 100)
STATS_DAYS = (1, 90)
#: A team's retention policy in days (0: keep everything).
RETENTION_DAYS = (0, 3650)
STRIP_FRAMES = (3, 8)
MAX_QUOTA_IMAGES = 1_000_000
MAX_BAN_REASON_CHARS = 500
#: Blend weights, each.
MAX_BLEND_WEIGHT = 100.0
VARIATION_STRENGTH = (0.05, 1.0)
#: How far a text diff turns an image (--amount).
EDIT_AMOUNT = (0.05, 1.0)

_WHOLE = re.compile(r"-?[0-9]{1,40}")
_COUNT = re.compile(r"[0-9]{1,40}")


def whole_number(text: str, *, what: str, low: int, high: int, signed: bool = False) -> int:
    """`text` as a whole number from `low` to `high`, or a UsageError naming `what`. A minus
    sign is read (and then refused as out of range) only when `signed`."""
    cleaned = text.strip().replace("_", "")
    if not (_WHOLE if signed else _COUNT).fullmatch(cleaned):
        raise UsageError(f"{what} must be a whole number, got {text[:40]!r}.")
    value = int(cleaned)
    if not low <= value <= high:
        raise UsageError(f"{what} must be between {low} and {high}, got {value}.")
    return value


def is_whole_number(text: str, *, low: int, high: int) -> bool:
    """Whether `text` reads as a whole number from `low` to `high` (by `whole_number`'s rules):
    for parsers that try one reading of a word before another."""
    try:
        whole_number(text, what="", low=low, high=high)
    except UsageError:
        return False
    return True


def job_id(value: int) -> int:
    """A job number someone typed: past what the database can hold, it names no job."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ID:
        raise UsageError(f"There is no job #{value}.")
    return value


def external_id(text: str, *, what: str = "That id") -> str:
    """A platform id typed or sent by someone (a user, role or team id)."""
    if not text or len(text) > MAX_EXTERNAL_ID_CHARS:
        raise UsageError(f"{what} is not a valid id ({len(text)} characters; ids are 1 to {MAX_EXTERNAL_ID_CHARS}).")
    return text
