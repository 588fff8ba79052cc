"""Signed gallery links: an HMAC over the team and an expiry, so a link cannot be guessed or
stretched to another team, and stops working when it expires."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass


class InvalidLink(Exception):
    """The link was not made by this gallery, was altered, or has expired."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class GalleryLinks:
    secret: str
    base_url: str
    ttl_s: int = 7 * 24 * 3600

    def token(self, team_id: int, *, now: float | None = None) -> str:
        if not self.secret:
            raise InvalidLink("no gallery secret is configured")
        expires = int((time.time() if now is None else now) + self.ttl_s)
        body = f"{team_id}.{expires}".encode()
        signature = hmac.new(self.secret.encode(), body, hashlib.sha256).digest()
        return f"{_b64(body)}.{_b64(signature)}"

    def url(self, team_id: int) -> str:
        return f"{self.base_url.rstrip('/')}/g/{self.token(team_id)}"

    def team_for(self, token: str, *, now: float | None = None) -> int:
        """The team a token grants, or InvalidLink."""
        if not self.secret:
            raise InvalidLink("no gallery secret is configured")
        try:
            body_text, signature_text = token.split(".", 1)
            body, signature = _unb64(body_text), _unb64(signature_text)
            expected = hmac.new(self.secret.encode(), body, hashlib.sha256).digest()
            if not hmac.compare_digest(signature, expected):
                raise InvalidLink("bad signature")
            team_id, expires = (int(part) for part in body.decode().split("."))
        except InvalidLink:
            raise
        except Exception as error:  # noqa: BLE001 - any malformed token is simply invalid
            raise InvalidLink("malformed link") from error
        if expires < (time.time() if now is None else now):
            raise InvalidLink("the link has expired")
        return team_id
