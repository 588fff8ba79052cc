"""`imagine-bot slack`: the bolt AsyncApp, served over HTTP or Socket Mode, with its delivery loop.

HTTP mode serves the Events API and interactivity (slash commands, buttons) on one aiohttp
endpoint; bolt verifies each request's signature and refuses timestamps older than five minutes
(401). Socket Mode needs no public URL. Which one is IMAGINE_SLACK_MODE.

Two event loops: the `Ingress` thread's runs bolt (verify, ack, relay) and nothing else; the
main one runs the adapter's work, the delivery loop, the database and the Web API calls.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import signal
import sys
import threading
import time
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.errors import SlackApiError

from bot.commands import Limits
from bot.delivery import Delivery
from bot.runtime import BotRuntime
from bot.slack.adapter import SlackAdapter
from bot.slack.config import SlackSettings
from bot.slack.web import api_error, build_client
from engine.store.models import utcnow

if TYPE_CHECKING:
    from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler

log = logging.getLogger(__name__)

# Slack retries an event for minutes; remembered event ids older than this can go.
EVENT_MEMORY = timedelta(hours=1)
EVENT_PRUNE_INTERVAL_S = 600
SIGNATURE_MAX_AGE_S = 300


def signed_by_slack(body: bytes, headers: Mapping[str, Any], secret: str, *, now: float | None = None) -> bool:
    """Whether a request carries Slack's signature of these exact bytes, made in the last five
    minutes (`v0=` + HMAC-SHA256 of `v0:{timestamp}:{body}`). Works on any bytes and any
    header values: a forged or garbled request is simply not signed."""
    timestamp = headers.get("X-Slack-Request-Timestamp") or ""
    signature = headers.get("X-Slack-Signature") or ""
    if not secret or not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
        return False
    if abs((now if now is not None else time.time()) - int(timestamp)) > SIGNATURE_MAX_AGE_S:
        return False
    expected = "v0=" + hmac.new(secret.encode(), b"v0:" + timestamp.encode() + b":" + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace"))


class Ingress:
    """Slack's way in on an event loop in a thread of its own: the HTTP endpoint (or the Socket
    Mode connection) and bolt, which verifies, acks and relays. Command work runs on the bot's
    main loop, so an ack never queues behind it: under a burst the work waits, the acks do not."""

    def __init__(self, app: AsyncApp, settings: SlackSettings) -> None:
        self.app = app
        self.settings = settings
        self.port: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._socket: AsyncSocketModeHandler | None = None

    def start(self, timeout: float = 60.0) -> None:
        """Start the thread and open the endpoint (blocking: call it through asyncio.to_thread)."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="slack-ingress", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._open(), self._loop).result(timeout)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop taking requests, hand over what was acked, end the thread (blocking)."""
        if self._loop is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(timeout)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread is not None:
                self._thread.join(timeout)
            self._loop.close()
            self._loop = None

    def web_app(self) -> web.Application:
        """The aiohttp app: Slack's requests on the configured path, and a health check."""
        application = web.Application()

        async def slack_request(request: web.Request) -> web.Response:
            # The signature is checked on the raw bytes before anything reads them, so bytes
            # that are not UTF-8, JSON or a form — signed or not — never reach a parser that
            # would fail with a 500: unsigned is 401, signed but unreadable is 400.
            body = await request.read()
            if not signed_by_slack(body, request.headers, self.settings.signing_secret.get_secret_value()):
                return web.Response(status=401, text="")
            try:
                bolt_request = AsyncBoltRequest(
                    body=body.decode("utf-8"), query=request.query_string, headers=dict(request.headers)
                )
                # Everything Slack sends is an object with a type, a slash command, or an SSL check.
                readable = isinstance(bolt_request.body, dict) and any(
                    bolt_request.body.get(key) for key in ("type", "command", "ssl_check")
                )
            except (ValueError, TypeError, AttributeError, KeyError):
                readable = False
            if not readable:
                log.info("slack: refused a signed request whose body cannot be read (%d bytes)", len(body))
                return web.Response(status=400, text="")
            response = await self.app.async_dispatch(bolt_request)
            return await to_aiohttp_response(response)

        async def health(_: web.Request) -> web.Response:
            return web.Response(text="ok")

        application.router.add_post(self.settings.path, slack_request)
        application.router.add_get("/healthz", health)
        return application

    async def _open(self) -> None:
        settings = self.settings
        if settings.mode == "http":
            self._runner = web.AppRunner(self.web_app(), access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, settings.host, settings.port)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            log.info("slack: listening on http://%s:%s%s", settings.host, self.port, settings.path)
        else:
            from slack_bolt.adapter.socket_mode.aiohttp import AsyncSocketModeHandler

            socket = AsyncSocketModeHandler(self.app, settings.app_token.get_secret_value())
            self._socket = socket
            await socket.connect_async()
            log.info("slack: connected in Socket Mode")

    async def _close(self) -> None:
        if self._socket is not None:
            await self._socket.close_async()
        if self._runner is not None:
            await self._runner.cleanup()
        # Lazy listeners of requests already acked still have to relay their work.
        pending = {t for t in asyncio.all_tasks() if t is not asyncio.current_task()}
        if pending:
            await asyncio.wait(pending, timeout=5)


class SlackBot:
    """One running Slack bot replica: the ingress (bolt) and, on the caller's loop, the adapter
    doing the work and the delivery loop."""

    def __init__(self, runtime: BotRuntime, settings: SlackSettings) -> None:
        self.runtime = runtime
        self.settings = settings
        self.app: AsyncApp | None = None
        self.adapter: SlackAdapter | None = None
        self.delivery: Delivery | None = None
        self.ingress: Ingress | None = None
        self._session: aiohttp.ClientSession | None = None
        self._pruner: asyncio.Task | None = None

    @property
    def port(self) -> int | None:
        return self.ingress.port if self.ingress else None

    async def start(self) -> None:
        settings, runtime = self.settings, self.runtime
        work_loop = asyncio.get_running_loop()
        self._session = aiohttp.ClientSession()
        # bolt gets a client of its own, without a shared session: it runs on the ingress loop,
        # and it deep-copies each request's context (client included) for lazy listeners, which
        # an aiohttp session does not survive.
        self.app = AsyncApp(
            client=build_client(settings),
            signing_secret=settings.signing_secret.get_secret_value() or None,
            request_verification_enabled=settings.mode == "http",  # socket messages are unsigned
            # Made for FaaS, and right here too: every ack function only acks (it cannot raise)
            # and the work is lazy anyway, so bolt answers in the same step as it dispatches
            # instead of polling for the ack every 10 ms.
            process_before_response=True,
            logger=logging.getLogger("slack_bolt.imagine"),
        )
        limits = Limits(max_steps=runtime.settings.limits.max_steps, max_guidance=runtime.settings.limits.max_guidance)
        self.adapter = SlackAdapter(
            runtime.service,
            runtime.deliveries,
            runtime.events,
            runtime.store,
            build_client(settings, self._session),
            settings,
            http=self._session,
            limits=limits,
            gallery_links=runtime.gallery_links(),
            progress_client=build_client(settings, self._session, wait_out_rate_limits=False),
        )
        self.adapter.register(self.app, lambda work: asyncio.run_coroutine_threadsafe(work, work_loop))
        self.delivery = Delivery(
            runtime.deliveries,
            self.adapter,
            runtime.wakeups(),
            sweep_interval_s=settings.delivery_sweep_s,
            progress_interval_s=settings.progress_interval_s,
            lease_s=settings.delivery_lease_s,
        )
        self.adapter.delivery = self.delivery
        await self.delivery.start()
        self._pruner = asyncio.create_task(self._forget_old_events(), name="slack-event-pruner")
        self.ingress = Ingress(self.app, settings)
        await asyncio.to_thread(self.ingress.start)

    async def stop(self) -> None:
        """Stop taking requests, let acked work finish, then stop delivering."""
        if self.ingress is not None:
            await asyncio.to_thread(self.ingress.stop)
        if self.adapter is not None:
            await self.adapter.close()
        if self._pruner is not None:
            self._pruner.cancel()
            await asyncio.gather(self._pruner, return_exceptions=True)
        if self.delivery is not None:
            await self.delivery.stop()
        if self._session is not None:
            await self._session.close()

    async def _forget_old_events(self) -> None:
        while True:
            try:
                dropped = await self.runtime.events.forget_events_before(utcnow() - EVENT_MEMORY)
                if dropped:
                    log.info("slack: forgot %d event ids older than %s", dropped, EVENT_MEMORY)
            except Exception:  # noqa: BLE001 - pruning is housekeeping; try again next time
                log.warning("slack: pruning old event ids failed", exc_info=True)
            await asyncio.sleep(EVENT_PRUNE_INTERVAL_S)


async def check_token(settings: SlackSettings) -> str | None:
    """None if the bot token works (auth.test), else what is wrong, for the operator."""
    async with aiohttp.ClientSession() as session:
        try:
            identity = await build_client(settings, session).auth_test()
        except SlackApiError as error:
            return f"Slack refused the bot token: {api_error(error)}"
        except aiohttp.ClientError as error:
            return f"cannot reach the Slack Web API at {settings.api_url}: {error}"
    log.info("slack: signed in as %s in %s", identity.get("user"), identity.get("team"))
    return None


async def serve(runtime: BotRuntime, settings: SlackSettings) -> int:
    """Run until SIGINT/SIGTERM, then stop taking requests and close everything."""
    problem = await check_token(settings)
    if problem:
        print(f"imagine-bot slack: {problem}", file=sys.stderr)
        return 2
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    bot = SlackBot(runtime, settings)
    await bot.start()
    where = f"http://{settings.host}:{bot.port}{settings.path}" if settings.mode == "http" else "Socket Mode"
    print(f"imagine-bot slack: ready ({where})", file=sys.stderr, flush=True)
    try:
        await stopping.wait()
    finally:
        await bot.stop()
    return 0


def main() -> int:
    """`imagine-bot slack`: configured by IMAGINE_SLACK_* (and the shared IMAGINE_* settings)."""
    from bot.runtime import build_bot_runtime
    from engine.config import get_settings

    settings = SlackSettings()
    problems = settings.problems()
    if problems:
        for problem in problems:
            print(f"imagine-bot slack: {problem}", file=sys.stderr)
        print("imagine-bot slack: see docs/slack.md for setting up the Slack app", file=sys.stderr)
        return 2
    shared = get_settings()
    runtime = build_bot_runtime(shared)
    runtime.start_ops()
    worker = runtime.start_embedded_worker()

    async def run() -> int:
        try:
            return await serve(runtime, settings)
        finally:
            await runtime.close()

    try:
        return asyncio.run(run())
    finally:
        if worker is not None:
            worker.stop()
