"""Slack settings (IMAGINE_SLACK_*), read when the Slack bot starts, never at import time."""

from __future__ import annotations

from typing import Literal

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class SlackSettings(BaseSettings):
    """How the Slack bot connects and behaves. Every variable is documented in docs/slack.md."""

    model_config = SettingsConfigDict(env_prefix="IMAGINE_SLACK_", env_file=None, extra="ignore")

    # Secrets are SecretStr so that printing the settings never shows them.
    bot_token: SecretStr = SecretStr("")  # xoxb-…: OAuth & Permissions → Bot User OAuth Token
    signing_secret: SecretStr = SecretStr("")  # Basic Information → Signing Secret (HTTP mode)
    app_token: SecretStr = SecretStr("")  # xapp-… with connections:write (Socket Mode)
    mode: Literal["http", "socket"] = "http"
    host: str = "0.0.0.0"
    port: int = 3000
    path: str = "/slack/events"
    # Where the Web API lives; only tests, proxies and fakes change it (the trailing slash matters).
    api_url: str = "https://slack.com/api/"
    # Who is an admin and which user groups they are in is looked up (users.info,
    # usergroups.list) and remembered this long.
    directory_cache_s: float = 60.0
    # Commands and reactions doing database and Slack work at once; more wait their turn so the
    # ack path keeps its share of the event loop under bursts.
    concurrent_work: int = 8
    # Uploads larger than this are re-encoded (JPEG, then smaller) before files_upload_v2.
    max_upload_bytes: int = 10 * 1024 * 1024
    # Rate-limited (429) Web API calls are retried this many times, after Retry-After each.
    rate_limit_retries: int = 3
    # A delivery that failed (an upload, say) is retried by a later sweep after this lease.
    delivery_lease_s: float = 30.0
    delivery_sweep_s: float = 5.0
    # At most one progress edit per job this often (chat.update is rate limited per workspace).
    progress_interval_s: float = 3.0

    def problems(self) -> list[str]:
        """What is missing for the chosen mode, in words fit for the operator."""
        missing = []
        if not self.bot_token.get_secret_value():
            missing.append("IMAGINE_SLACK_BOT_TOKEN (the xoxb-… Bot User OAuth Token) is not set")
        if self.mode == "http" and not self.signing_secret.get_secret_value():
            missing.append("IMAGINE_SLACK_SIGNING_SECRET is not set (HTTP mode verifies every request)")
        if self.mode == "socket" and not self.app_token.get_secret_value().startswith("xapp-"):
            missing.append("IMAGINE_SLACK_APP_TOKEN (an xapp-… app-level token) is needed in socket mode")
        return missing
