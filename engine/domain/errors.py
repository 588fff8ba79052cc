"""Errors a user can cause, each with a message fit to show them.

Adapters catch `UserFacingError` in one place and show `str(error)`; anything else is a bug and
is logged with its job id, and the user sees a generic apology. The subclasses say *why*, so tests
and adapters can tell them apart (a banned user is not told to try again later, say).
"""

from __future__ import annotations


class UserFacingError(Exception):
    """Base for errors whose message is shown to the person who caused them."""

    #: Whether retrying the same request later may succeed (shown as a hint by adapters).
    retryable = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(UserFacingError):
    """A command or option the parser or the domain cannot accept."""


class PromptRejected(UserFacingError):
    """The prompt contains a term this team's moderators blocked."""

    def __init__(self, term: str) -> None:
        super().__init__(f"Your prompt contains a term this team has blocked ({term!r}). Nothing was charged.")
        self.term = term


class UserBanned(UserFacingError):
    """The requester is banned in this team."""

    def __init__(self, reason: str | None) -> None:
        why = f": {reason}" if reason else "."
        super().__init__(f"You are banned from imagine-bot in this team{why}")
        self.reason = reason


class QuotaExceeded(UserFacingError):
    """The request costs more images than the requester has left this period."""

    retryable = True

    def __init__(self, cost: int, remaining: int, resets_in: str) -> None:
        super().__init__(
            f"This needs {cost} image{'s' if cost != 1 else ''} of quota but you have "
            f"{remaining} left; your quota resets in {resets_in}."
        )
        self.cost = cost
        self.remaining = remaining


class NotFound(UserFacingError):
    """A job, image or message the user referred to does not exist (in their team)."""


class NotPermitted(UserFacingError):
    """The actor lacks the right for this action (moderator-only, or someone else's job)."""


class InvalidState(UserFacingError):
    """The action does not fit the job's state (cancel a finished job, vary a failed one)."""


class QueueUnavailable(UserFacingError):
    """The job queue (broker) could not be reached; the job was marked failed and refunded."""

    retryable = True

    def __init__(self) -> None:
        super().__init__(
            "The render queue is down right now, so your job could not be queued. "
            "Nothing was charged; please try again in a minute."
        )


class StoreUnavailable(UserFacingError):
    """The database could not be reached."""

    retryable = True

    def __init__(self) -> None:
        super().__init__(
            "imagine-bot cannot reach its database right now. Nothing was charged; please try again in a minute."
        )
