"""What every fake platform server here shares: a recording HTTP + websocket server on loopback.

A fake (FakeDiscord, FakeSlack) is an aiohttp server on a free 127.0.0.1 port that the real
client library talks to, as it would to the platform. Tests never look inside the bot; they look
at what reached the platform. So every request the fake serves is recorded as a `Call` before it
is answered, and a test can:

- ask what arrived (`received`), only after a point (`mark()`, then `since=`);
- wait until something arrives (`wait_for`, `wait_until`), woken by one asyncio.Condition that
  is notified whenever the fake records, answers or otherwise changes something;
- make the platform misbehave on purpose: answer the next N matching calls with a canned error
  (`fail`), or hold an answer back until the test lets it go (`pause`).

What a request means and how the platform answers it is the subclass's alone: its routes, its
state and rules, the shape of its errors (`error_body`) and its websocket protocol (the base only
accepts the connection and greets it, as both Discord's gateway and Slack's Socket Mode speak
first).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, Self, TypeVar

from aiohttp import WSMsgType, web

#: What a wait gives up after, unless told: long enough for a loaded CI machine, short enough
#: that a test waiting for something the bot never sends fails with the log, not a CI timeout.
DEFAULT_TIMEOUT_S = 20.0
#: How many of the calls a failed wait lists (the latest ones): enough to see what went wrong.
SHOWN_CALLS = 40


@dataclass
class Call:
    """One request a fake received.

    `method` is what tests match on first, and it is the operation in the platform's own terms:
    the HTTP method for Discord, whose REST routes are then told apart by `path`; the Web API
    method (`chat.postMessage`) for Slack, where every call is a POST to /api/<method>.
    """

    method: str
    path: str  # the URL's path on the fake
    headers: dict[str, str]
    at: float = field(default_factory=time.perf_counter, kw_only=True)  # when it arrived
    answered: bool = field(default=False, kw_only=True)  # the fake has done what it asked and answered


CallT = TypeVar("CallT", bound=Call)


@dataclass
class Failure:
    """A failure set up with `fail`: the next `remaining` matching calls get this answer."""

    method: str
    path: re.Pattern[str] | None
    status: int
    body: Any
    headers: dict[str, str]
    after_effect: bool  # do what the call asked first: the answer is lost on its way back
    remaining: int


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON answer whose Content-Type is exactly `application/json`: discord.py parses a body
    as JSON only then (no charset), and slack_sdk takes it too."""
    return web.Response(
        body=json.dumps(data).encode(), status=status, headers={"Content-Type": "application/json", **(headers or {})}
    )


async def json_frames(ws: web.WebSocketResponse) -> AsyncIterator[Any]:
    """The text frames a client sends on a websocket, decoded (both platforms speak JSON)."""
    async for frame in ws:
        if frame.type == WSMsgType.TEXT:
            yield json.loads(frame.data)


class RecordingServer(ABC, Generic[CallT]):
    """The shared base: lifecycle, the call log and waiting on it, and failure injection.

    A subclass lists its routes (`routes`); each HTTP handler builds its `Call` and has `serve`
    record and answer it; a websocket handler opens its connection with `websocket`.
    """

    #: The platform, for messages: "the fake Discord never received …".
    name = "platform"

    def __init__(self) -> None:
        self.calls: list[CallT] = []
        #: Called with every call as it is recorded (a benchmark paces itself on acknowledgements).
        self.on_request: Callable[[CallT], None] | None = None
        #: The open websocket connections, oldest first (`stop` closes them).
        self.sockets: list[web.WebSocketResponse] = []
        self.port = 0
        self._changed = asyncio.Condition()
        self._failures: list[Failure] = []
        self._pauses: list[tuple[str, re.Pattern[str] | None, asyncio.Event]] = []
        self._runner: web.AppRunner | None = None

    # --- lifecycle ------------------------------------------------------------------------

    @abstractmethod
    def routes(self) -> list[web.RouteDef]:
        """The platform's routes (the subclass's)."""

    async def start(self, port: int = 0, *, extra_routes: Iterable[web.RouteDef] = ()) -> Self:
        """Serve on 127.0.0.1:`port` (a free one by default). `extra_routes` are not the
        platform's (e.g. a benchmark's control endpoint) and are not recorded."""
        # Uploads (images) are larger than aiohttp's 1 MiB default.
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_routes([*extra_routes, *self.routes()])
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        for ws in list(self.sockets):
            await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- what the bot did -------------------------------------------------------------------

    def mark(self) -> int:
        """A position in the call log: `received(..., since=mark)` looks only after it."""
        return len(self.calls)

    def received(
        self,
        method: str,
        path: str | None = None,
        where: Callable[[CallT], bool] | None = None,
        *,
        since: int = 0,
        arrived: bool = False,
    ) -> list[CallT]:
        """The calls of `method` after `since` whose path fully matches the regular expression
        `path` (any path if None) and for which `where` holds — those already answered, or all
        that arrived if `arrived`."""
        if path is not None and not isinstance(path, str):
            # Slack's tests used to pass `where` second: say so rather than fail inside `re`.
            raise TypeError(f"path is a regular expression, not a {type(path).__name__}: pass a predicate as where=")
        pattern = re.compile(path) if path is not None else None
        return [
            call
            for call in self.calls[since:]
            if call.method == method
            and (pattern is None or pattern.fullmatch(call.path))
            and (arrived or call.answered)
            and (where is None or where(call))
        ]

    async def wait_for(
        self,
        method: str,
        path: str | None = None,
        where: Callable[[CallT], bool] | None = None,
        *,
        since: int = 0,
        count: int = 1,
        timeout: float = DEFAULT_TIMEOUT_S,
        arrived: bool = False,
    ) -> CallT:
        """Wait until `count` matching calls (as `received` matches them) were answered, or
        arrived, after `since`; return the last of them. On timeout, fail the test with what
        the fake did receive."""

        def enough() -> bool:
            return len(self.received(method, path, where, since=since, arrived=arrived)) >= count

        async with self._changed:
            try:
                await asyncio.wait_for(self._changed.wait_for(enough), timeout)
            except TimeoutError:
                wanted = f"{count} × {method}" + (f" {path}" if path is not None else "")
                raise AssertionError(
                    f"the fake {self.name} never received {wanted} within {timeout} s; it got:\n{self._log(since)}"
                ) from None
        return self.received(method, path, where, since=since, arrived=arrived)[count - 1]

    async def wait_until(self, check: Callable[[], bool], timeout: float = DEFAULT_TIMEOUT_S) -> None:
        """Wait until `check()` holds; it is evaluated again whenever the fake changes."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(check), timeout)

    async def notify(self) -> None:
        """Wake the waiters: something they may wait for has changed."""
        async with self._changed:
            self._changed.notify_all()

    def describe(self, call: CallT) -> str:
        """One line about a call, for a failed wait's message (subclasses add the payload)."""
        return f"{call.method} {call.path}"

    def _log(self, since: int) -> str:
        calls = self.calls[since:]
        shown = [f"  {self.describe(call)}" for call in calls[-SHOWN_CALLS:]]
        if len(calls) > SHOWN_CALLS:
            shown.insert(0, f"  … {len(calls) - SHOWN_CALLS} earlier calls")
        return "\n".join(shown) or "  nothing"

    # --- misbehaving ------------------------------------------------------------------------

    @abstractmethod
    def error_body(self, status: int) -> Any:
        """The body of an error answer in the platform's shape (the subclass's)."""

    def fail(
        self,
        method: str,
        path: str | None = None,
        *,
        status: int = 500,
        body: Any = None,
        headers: dict[str, str] | None = None,
        times: int = 1,
        after_effect: bool = False,
    ) -> None:
        """Answer the next `times` calls of `method` (on paths matching `path`) with `status`,
        `body` (the platform's usual error by default) and `headers`; with `after_effect`, the
        fake does what each asked first, as when a response is lost on its way back."""
        self._failures.append(
            Failure(
                method,
                re.compile(path) if path is not None else None,
                status,
                body if body is not None else self.error_body(status),
                headers or {},
                after_effect,
                times,
            )
        )

    def pause(self, method: str, path: str | None = None) -> asyncio.Event:
        """Hold the answer to the next matching call (recorded at once) until the event is set."""
        release = asyncio.Event()
        self._pauses.append((method, re.compile(path) if path is not None else None, release))
        return release

    def _take_failure(self, call: CallT) -> Failure | None:
        for failure in self._failures:
            if _matches(call, failure.method, failure.path):
                failure.remaining -= 1
                if failure.remaining <= 0:
                    self._failures.remove(failure)
                return failure
        return None

    async def _wait_if_paused(self, call: CallT) -> None:
        for paused in self._pauses:
            method, path, release = paused
            if _matches(call, method, path):
                self._pauses.remove(paused)
                await release.wait()
                return

    # --- serving ----------------------------------------------------------------------------

    async def serve(self, call: CallT, handle: Callable[[CallT], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        """Record `call` and answer it: once a `pause` on it is released, with the failure set
        up for it if any (after `handle` did the work, for an `after_effect` one), or else with
        what `handle` answers. Waiters wake when it is recorded and when it is answered."""
        async with self._changed:
            self.calls.append(call)
            self._changed.notify_all()
        if self.on_request is not None:
            self.on_request(call)
        await self._wait_if_paused(call)
        failure = self._take_failure(call)
        try:
            if failure is None or failure.after_effect:
                response = await handle(call)
            if failure is not None:
                response = json_response(failure.body, failure.status, failure.headers)
        finally:
            async with self._changed:
                call.answered = True
                self._changed.notify_all()
        return response

    @contextlib.asynccontextmanager
    async def websocket(self, request: web.Request, hello: Any) -> AsyncIterator[web.WebSocketResponse]:
        """Accept a websocket connection and send `hello` (both platforms speak first); it is in
        `sockets` until it closes, and waiters wake when it opens."""
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str(json.dumps(hello))
        self.sockets.append(ws)
        await self.notify()
        try:
            yield ws
        finally:
            if ws in self.sockets:
                self.sockets.remove(ws)


def _matches(call: Call, method: str, path: re.Pattern[str] | None) -> bool:
    return call.method == method and (path is None or path.fullmatch(call.path) is not None)
