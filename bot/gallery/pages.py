"""HTML for the gallery: plain server-rendered pages, no scripts, every user text escaped."""

from __future__ import annotations

from html import escape

from bot.replies import job_title
from engine.domain.views import GenerationView, ThreadNode

STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px; background: #111; color: #eee; }
a { color: #8cf; } h1 { font-size: 22px; } .muted { color: #999; font-size: 13px; }
.grid { display: flex; flex-wrap: wrap; gap: 16px; }
.card { width: 220px; } .card img, .tree img { image-rendering: pixelated; background: #222; }
.card img { width: 100px; height: 100px; margin: 2px; }
.tree ul { list-style: none; padding-left: 32px; border-left: 2px solid #444; margin: 6px 0; }
.tree > ul { border-left: none; padding-left: 0; }
.tree li { margin: 10px 0; } .tree img { width: 64px; height: 64px; margin: 1px; }
form input { padding: 6px; width: 280px; }
"""


def page(title: str, body: str) -> str:
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{escape(title)}</title><style>{STYLE}</style></head>"
        f"<body><h1>{escape(title)}</h1>{body}</body></html>"
    )


def _images(base: str, job: GenerationView) -> str:
    return "".join(
        f"<img src='{base}/images/{image.id}.png' alt='#{job.id}:{image.index}' "
        f"title='#{job.id}:{image.index} seed {image.seed}'>"
        for image in job.images
    )


def _caption(base: str, job: GenerationView) -> str:
    who = escape(job.requester_name or job.requester_external_id)
    title = job_title(job, escape).split(" ", 1)[1]  # without the "#id", which becomes the link
    return (
        f"<div><a href='{base}/threads/{job.id}'>#{job.id}</a> {title}</div>"
        f"<div class='muted'>by <a href='{base}/users/{escape(job.requester_external_id, quote=True)}'>{who}</a>"
        f" · {job.created_at:%Y-%m-%d %H:%M}</div>"
    )


def gallery(base: str, title: str, jobs: list[GenerationView], query: str = "") -> str:
    search = (
        f"<form method='get' action='{base}'><input name='q' value='{escape(query, quote=True)}' "
        "placeholder='search prompts'> <button>Search</button></form>"
    )
    if not jobs:
        return page(title, search + "<p class='muted'>Nothing here yet.</p>")
    cards = "".join(f"<div class='card'>{_images(base, job)}{_caption(base, job)}</div>" for job in jobs)
    return page(title, f"{search}<div class='grid'>{cards}</div>")


def thread(base: str, tree: ThreadNode) -> str:
    def node(item: ThreadNode) -> str:
        job = item.generation
        children = "".join(node(child) for child in item.children)
        return (
            f"<li data-job='{job.id}'>{_images(base, job)}{_caption(base, job)}"
            + (f"<ul>{children}</ul>" if children else "")
            + "</li>"
        )

    root = tree.generation
    return page(
        f"Thread of #{root.id}", f"<p><a href='{base}'>all images</a></p><div class='tree'><ul>{node(tree)}</ul></div>"
    )


def forbidden() -> str:
    return page("This gallery link is not valid", "<p>Ask the bot for a fresh one: <code>/imagine gallery</code>.</p>")
