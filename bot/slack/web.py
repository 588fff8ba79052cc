"""The Slack Web API client as imagine-bot uses it, and reading its errors."""

from __future__ import annotations

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot.slack.config import SlackSettings


def build_client(
    settings: SlackSettings, session: aiohttp.ClientSession | None = None, *, wait_out_rate_limits: bool = True
) -> AsyncWebClient:
    """A Web API client that retries 429s after Retry-After (unless told not to wait), and 5xx
    and lost connections once."""
    handlers = [AsyncConnectionErrorRetryHandler(max_retry_count=2), AsyncServerErrorRetryHandler(max_retry_count=1)]
    if wait_out_rate_limits:
        handlers.append(AsyncRateLimitErrorRetryHandler(max_retry_count=settings.rate_limit_retries))
    return AsyncWebClient(
        token=settings.bot_token.get_secret_value(), base_url=settings.api_url, session=session, retry_handlers=handlers
    )


def api_error(error: SlackApiError) -> str:
    """Slack's error code (`not_in_channel`), or the HTTP status when the answer was not JSON."""
    data = error.response.data
    if isinstance(data, dict):
        return str(data.get("error") or "unknown_error")
    return f"http_{error.response.status_code}"
