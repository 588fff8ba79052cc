"""The gallery's aiohttp app: every page needs a valid signed link for its team.

/g/<token>                    recent images of the team (?q= searches prompts)
/g/<token>/users/<user id>    one member's history
/g/<token>/threads/<job id>   a variation thread drawn as a tree
/g/<token>/images/<id>.png    an image file (only the link's team's)
/healthz
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from aiohttp import web

from bot.gallery import pages
from bot.gallery.links import GalleryLinks, InvalidLink
from engine.domain.errors import NotFound
from engine.image_files import ImageStore
from engine.service import TeamGallery

if TYPE_CHECKING:
    from aiohttp.typedefs import Handler

    from engine.config import Settings

log = logging.getLogger(__name__)

#: No scripts, images from here only; no referrer (the link is in the URL); nothing cached
#: by shared caches.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; form-action 'self'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "private, max-age=60",
}


def make_app(gallery: TeamGallery, store: ImageStore, links: GalleryLinks) -> web.Application:  # noqa: C901 - one nested handler per route
    routes = web.RouteTableDef()

    def team_of(request: web.Request) -> int:
        try:
            return links.team_for(request.match_info["token"])
        except InvalidLink as error:
            log.info("gallery: refused a link (%s)", error)
            raise web.HTTPForbidden(text=pages.forbidden(), content_type="text/html") from None

    def html(body: str) -> web.Response:
        return web.Response(text=body, content_type="text/html", headers=SECURITY_HEADERS)

    def base(request: web.Request) -> str:
        return f"/g/{request.match_info['token']}"

    @routes.get("/healthz")
    async def health(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    @routes.get("/g/{token}")
    async def recent(request: web.Request) -> web.Response:
        team = team_of(request)
        query = request.query.get("q", "")[:200]
        jobs = await gallery.team_gallery(team, query=query)
        title = f"Search: {query}" if query else "Recent images"
        return html(pages.gallery(base(request), title, jobs, query))

    @routes.get("/g/{token}/users/{user}")
    async def user(request: web.Request) -> web.Response:
        team = team_of(request)
        jobs = await gallery.team_gallery(team, user=request.match_info["user"])
        name = jobs[0].requester_name if jobs else request.match_info["user"]
        return html(pages.gallery(base(request), f"Images by {name}", jobs))

    @routes.get(r"/g/{token}/threads/{job:\d+}")
    async def thread(request: web.Request) -> web.Response:
        team = team_of(request)
        try:
            tree = await gallery.team_thread(team, int(request.match_info["job"]))
        except NotFound:
            raise web.HTTPNotFound(text="no such thread") from None
        return html(pages.thread(base(request), tree))

    @routes.get(r"/g/{token}/images/{image:\d+}.png")
    async def image(request: web.Request) -> web.StreamResponse:
        team = team_of(request)
        try:
            view = await gallery.team_image(team, int(request.match_info["image"]))
        except NotFound:
            raise web.HTTPNotFound(text="no such image") from None
        path = store.path(view.storage_key)
        if not path.exists():
            raise web.HTTPNotFound(text="image file missing")
        return web.FileResponse(path, headers={**SECURITY_HEADERS, "Content-Type": "image/png"})

    @web.middleware
    async def forbid_unknown(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPNotFound:
            if not request.path.startswith("/g/") and request.path != "/healthz":
                raise web.HTTPForbidden(text=pages.forbidden(), content_type="text/html") from None
            raise

    app = web.Application(middlewares=[forbid_unknown])
    app.add_routes(routes)
    return app


def run_gallery(settings: Settings) -> int:
    """`imagine-bot gallery`: serve the gallery until stopped."""
    from bot.runtime import build_bot_runtime

    if not settings.gallery.secret:
        log.warning("IMAGINE_GALLERY_SECRET is empty: every gallery link will be refused")
    runtime = build_bot_runtime(settings)
    links = GalleryLinks(settings.gallery.secret, settings.gallery.base_url, settings.gallery.link_ttl_hours * 3600)
    web.run_app(
        make_app(runtime.gallery, runtime.store, links),
        host=settings.gallery.host,
        port=settings.gallery.port,
        print=None,
    )
    return 0
