"""The team gallery: signed links, pages, and a thread tree seen by a real headless Chromium."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from aiohttp import web
from PIL import Image

from bot.commands import Gallery
from bot.gallery.app import make_app
from bot.gallery.links import GalleryLinks, InvalidLink
from bot.runner import CommandRunner
from engine.domain.types import Actor, ImageRef, ImagineRequest, Platform, RenderParams, VariationRequest
from engine.image_files import ImageStore
from engine.render.noop import NoopRenderer
from engine.service import TeamGallery
from engine.store.db import Database
from engine.worker.jobs import run_generation
from engine.worker.runtime import WorkerRuntime
from tests.engine.worker.test_jobs import RecordingPublisher

ALICE = Actor(Platform.CONSOLE, "team-1", "alice", "Alice")
EVE = Actor(Platform.CONSOLE, "team-2", "eve", "Eve")
LINKS = GalleryLinks("a-long-random-gallery-secret", "http://127.0.0.1")
# The no-op renderer paints image k of a job with seed s in colour (s % 256, s>>8 % 256, s>>16 % 256).
RED, GREEN, BLUE = 255, 255 << 8, 255 << 16


def test_links_are_signed_and_expire():
    """A link names one team, cannot be altered or forged, and stops working when it expires."""
    token = LINKS.token(7, now=1000)
    assert LINKS.team_for(token, now=1001) == 7
    with pytest.raises(InvalidLink, match="expired"):
        LINKS.team_for(token, now=1000 + LINKS.ttl_s + 1)
    body, signature = token.split(".")
    forged = LINKS.token(8, now=1000).split(".")[0] + "." + signature
    with pytest.raises(InvalidLink, match="bad signature"):
        LINKS.team_for(forged, now=1001)
    with pytest.raises(InvalidLink):
        GalleryLinks("another-secret", "").team_for(token, now=1001)
    with pytest.raises(InvalidLink, match="malformed"):
        LINKS.team_for("garbage", now=1001)


@pytest.fixture
async def thread_of_colours(service, database, database_url, tmp_path):
    """A red root, a green variation of it and a blue variation of the green: rendered by the
    worker with the no-op renderer, whose colours come from the seeds."""
    store = ImageStore(tmp_path / "images")
    db = Database(database_url)
    runtime = WorkerRuntime(db=db, store=store, publisher=RecordingPublisher(), renderer_factory=NoopRenderer)
    root = (
        await service.submit_imagine(ALICE, ImagineRequest("a <b>red</b> square", seed=RED, params=RenderParams(n=1)))
    ).generation
    await asyncio.to_thread(run_generation, runtime, root.id)
    green = (
        await service.submit_variation(
            ALICE, VariationRequest(ImageRef(root.id, 1), seed=GREEN, params=RenderParams(n=1))
        )
    ).generation
    await asyncio.to_thread(run_generation, runtime, green.id)
    blue = (
        await service.submit_variation(
            ALICE, VariationRequest(ImageRef(green.id, 1), seed=BLUE, params=RenderParams(n=1))
        )
    ).generation
    await asyncio.to_thread(run_generation, runtime, blue.id)
    other = (await service.submit_imagine(EVE, ImagineRequest("secret", seed=1, params=RenderParams(n=1)))).generation
    await asyncio.to_thread(run_generation, runtime, other.id)
    yield store, root, green, blue, other
    db.sync_engine.dispose()


@pytest.fixture
async def gallery_server(database, thread_of_colours):
    store = thread_of_colours[0]
    runner = web.AppRunner(make_app(TeamGallery(database), store, LINKS))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def fetch(url: str) -> tuple[int, bytes]:
    def get():
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    return await asyncio.to_thread(get)


async def test_pages_need_a_valid_link(service, deliveries, gallery_server, thread_of_colours):
    """Pages answer with a valid link; without one, with another's, or expired: 403."""
    _, root, green, blue, other = thread_of_colours
    team = await service.team_id(ALICE)
    base = f"{gallery_server}/g/{LINKS.token(team)}"
    status, body = await fetch(base)
    assert status == 200 and b"a &lt;b&gt;red&lt;/b&gt; square" in body and b"<b>red</b>" not in body
    assert b"secret" not in body  # another team's job
    assert (await fetch(f"{base}?q=RED"))[1].count(b"class='card'") == 3
    assert b"Nothing here yet" in (await fetch(f"{base}?q=nothing"))[1]
    assert (await fetch(f"{base}/users/alice"))[0] == 200
    assert (await fetch(f"{base}/threads/{blue.id}"))[0] == 200
    other_image = (await deliveries.generation(other.id)).images[0].id
    assert (await fetch(f"{base}/images/{other_image}.png"))[0] == 404
    assert (await fetch(f"{base}/threads/{other.id}"))[0] == 404
    for url in (
        f"{gallery_server}/g/not-a-token",
        f"{gallery_server}/g/{LINKS.token(team, now=0)}",
        f"{gallery_server}/",
        f"{gallery_server}/g/{GalleryLinks('x' * 20, '').token(team)}",
    ):
        assert (await fetch(url))[0] == 403, url


async def test_gallery_command_gives_a_link(service):
    """`/imagine gallery` answers with a signed link to the asker's team, or says it is off."""
    reply = await CommandRunner(service, gallery_links=LINKS).run(ALICE, Gallery())
    token = reply.text.rsplit("/g/", 1)[1]
    assert LINKS.team_for(token) == await service.team_id(ALICE) and reply.ephemeral
    off = await CommandRunner(service).run(ALICE, Gallery())
    assert off.is_error and "IMAGINE_GALLERY_SECRET" in off.text


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
async def test_thread_tree_in_a_real_browser(service, gallery_server, thread_of_colours, tmp_path):
    """Headless Chromium renders the thread as a tree: red root, green child indented under it,
    blue grandchild indented further."""
    browser = chromium()
    if browser is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI requires Chromium (.ci/run installs Debian's chromium package)")
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    _, root, green, blue, _ = thread_of_colours
    url = f"{gallery_server}/g/{LINKS.token(await service.team_id(ALICE))}/threads/{green.id}"
    shot = tmp_path / "thread.png"
    if os.environ.get("IMAGINE_KEEP_SCREENSHOT"):
        shot = Path(os.environ["IMAGINE_KEEP_SCREENSHOT"])
    await asyncio.to_thread(
        subprocess.run,
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=900,700",
            f"--screenshot={shot}",
            url,
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    with Image.open(shot) as picture:
        pixels = np.asarray(picture.convert("RGB")).astype(int)

    def where(colour):
        mask = np.abs(pixels - np.array(colour)).sum(axis=2) < 10
        ys, xs = np.nonzero(mask)
        assert len(xs) > 30 * 30, f"{colour} not drawn"  # a 64 px thumbnail, mostly visible
        return xs.min(), ys.min()

    red_x, red_y = where((255, 0, 0))
    green_x, green_y = where((0, 255, 0))
    blue_x, blue_y = where((0, 0, 255))
    assert red_x < green_x < blue_x  # each generation indented under its parent
    assert red_y < green_y < blue_y
