"""Logging for every process: text or one JSON object per line, the job id on every line
about a job, and no secrets — tokens, signing secrets and interaction URLs are redacted
before a line is written, whoever logged it (discord.py and slack_sdk included)."""

from __future__ import annotations

import contextvars
import json
import logging
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

#: The job the current task or coroutine is working on (set by workers, adapters, delivery).
current_job: contextvars.ContextVar[int | None] = contextvars.ContextVar("imagine_job", default=None)

# (pattern, replacement): what a secret looks like, and what is left of it in the log.
_SECRET_PATTERNS = [
    # Discord bot tokens: base64 user id . timestamp . hmac
    (re.compile(r"[MNO][A-Za-z\d_-]{23,27}\.[A-Za-z\d_-]{6}\.[A-Za-z\d_-]{27,40}"), "[redacted]"),
    # Slack tokens (bot, user, app-level, config) and incoming-webhook URLs
    (re.compile(r"\bxox[abposre]-[A-Za-z0-9-]{10,}"), "[redacted]"),
    (re.compile(r"\bxapp-[A-Za-z0-9-]{10,}"), "[redacted]"),
    (re.compile(r"hooks\.slack\.com/services/[A-Za-z0-9/]+"), "hooks.slack.com/services/[redacted]"),
    # Discord interaction tokens inside webhook and callback URLs (the id stays, for debugging)
    (re.compile(r"(/(?:webhooks|interactions)/\d+)/[A-Za-z0-9_.-]{20,}"), r"\1/[redacted]"),
    # Authorization headers, and passwords inside URLs
    (re.compile(r"(?i)(authorization[\"']?\s*[:=]\s*[\"']?)(?:bot |bearer )?[^\s\"',]+"), r"\1[redacted]"),
    (re.compile(r"(://[^:/@\s]+):[^@/\s]+@"), r"\1:[redacted]@"),
]
_known_secrets: set[str] = set()


def register_secrets(values: Iterable[str | None]) -> None:
    """Redact these exact values (configured tokens and secrets) from every log line."""
    _known_secrets.update(v for v in values if v and len(v) >= 6)


def redact(text: str) -> str:
    """The text with every secret we know of, or recognise, replaced."""
    for secret in _known_secrets:
        text = text.replace(secret, "[redacted]")
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


@contextmanager
def job_context(job_id: int | None) -> Iterator[None]:
    """Every log line inside this block names the job."""
    token = current_job.set(job_id)
    try:
        yield
    finally:
        current_job.reset(token)


class RedactingFilter(logging.Filter):
    """Adds the current job id and scrubs secrets from the fully formatted message."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.job_id = current_job.get()
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        job_id = getattr(record, "job_id", None)
        if job_id is not None:
            entry["job_id"] = job_id
        if record.exc_text:
            entry["exception"] = record.exc_text
        elif record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        job = getattr(record, "job_id", None)
        record.job = f" job={job}" if job is not None else ""
        return super().format(record)


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Install the formatter and the redacting filter on the root handler."""
    handler = logging.StreamHandler()
    handler.addFilter(RedactingFilter())
    handler.setFormatter(
        JsonFormatter() if fmt == "json" else TextFormatter("%(asctime)s %(levelname)s %(name)s%(job)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    # discord.py logs interaction tokens in URLs at DEBUG: never go below INFO there.
    for noisy in ("discord.http", "discord.webhook", "discord.gateway"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, root.level))
