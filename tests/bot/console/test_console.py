"""The console adapter end to end: script → parser → service → Celery (embedded) → delivery."""

from __future__ import annotations

import asyncio
import io
import re
from pathlib import Path

from bot.console.adapter import ConsoleAdapter
from bot.runtime import build_bot_runtime
from engine.worker.embedded import EmbeddedWorker
from tests.engine.worker.test_celery import make_settings


async def run_console(tmp_path, sqlite_template, tiny_model_dir, lines: list[str]):
    settings = make_settings(tmp_path, sqlite_template, tiny_model_dir, "")
    runtime = build_bot_runtime(settings)
    worker = EmbeddedWorker(runtime.celery_app)
    await asyncio.to_thread(worker.start)
    out = io.StringIO()
    try:
        adapter = ConsoleAdapter(runtime, user="tester", out_dir=tmp_path / "out", stream=out)
        failures = await adapter.run_script(lines)
    finally:
        await asyncio.to_thread(worker.stop)
        await runtime.close()
    return failures, out.getvalue()


async def test_demo_script(tmp_path, sqlite_template, tiny_model_dir):
    """The demo's commands save a grid and images, vary image 2 and print the thread tree."""
    script = Path(__file__).resolve().parents[3] / "demo" / "demo.imagine"
    failures, output = await run_console(tmp_path, sqlite_template, tiny_model_dir, script.read_text().splitlines())
    assert failures == 0, output
    paths = re.findall(r"(?:grid|image \d):\s+(\S+\.png)", output)
    assert len(paths) == 2 + 8  # two grids, 4 + 4 images
    assert all(Path(p).stat().st_size > 0 for p in paths)
    assert '#1 imagine "a red star on a blue background" (4 images)\n└─ #2 variation of #1:2 (4 images)' in output
    assert "Your jobs (page 1 of 1, 2 in all)" in output
    assert "192 of 200 images left today" in output


async def test_errors_are_reported_and_counted(tmp_path, sqlite_template, tiny_model_dir):
    """Bad commands print a specific error and count as failures; good ones still run."""
    failures, output = await run_console(
        tmp_path,
        sqlite_template,
        tiny_model_dir,
        [
            "/imagine a cat --n 9",
            "/vary last:2",
            "/imagine-admin ban @tester",
            "# a comment is ignored",
            "/imagine a cat --n 1 --seed 1",
            "/cancel",
        ],
    )
    assert "error: --n must be between 1 and 4, got 9." in output
    assert "error: You have no finished jobs yet" in output
    assert "error: You cannot ban yourself." in output
    assert "done, 1 image, seed 1." in output
    assert "error: Job #1 is already done; there is nothing to cancel." in output
    assert failures == 4


async def test_hostile_numbers_and_ids_are_refused_and_the_script_goes_on(tmp_path, sqlite_template, tiny_model_dir):
    """Digits from other scripts, superscripts, ids past what the database holds and user ids
    longer than it stores each get their own error; the script carries on to the end."""
    failures, output = await run_console(
        tmp_path,
        sqlite_template,
        tiny_model_dir,
        [
            "/history ²",
            "/history 99999999999999999999",
            "/thread 999999999999",
            "/reroll 99999999999999999999",
            "/vary ²:1",
            "/vary 999999999999:1",
            "/imagine-admin stats ²",
            "/imagine-admin audit ٣",
            "/imagine-admin retention ²",
            "/imagine-admin quota set @bob ²",
            "/imagine-admin ban @" + "U" * 70,
            "/imagine-admin block-term red circle",
            "/imagine a\u200b r\u200ded c\u2060ircle",
            "/imagine a cat --n 1 --seed 1",
        ],
    )
    assert "Traceback" not in output and "Sorry, something went wrong" not in output
    assert "error: Pages are numbered from 1, got '²'." in output
    assert "error: There is no page 99999999999999999999" in output
    assert "error: There is no job #999999999999." in output
    assert "error: There is no job #99999999999999999999." in output
    assert "error: '²:1' is not an image reference" in output
    assert "error: `stats` takes how many days to cover, 1 to 90." in output
    assert "error: `audit` takes how many entries to show, 1 to 100." in output
    assert "error: Retention is a number of days from 1 to 3650, got '²'." in output
    assert "error: The number of images must be a whole number, got '²'." in output
    assert "error: That user is not a valid id (70 characters; ids are 1 to 64)." in output
    assert "error: Your prompt contains a term this team has blocked ('red circle')" in output
    assert "done, 1 image, seed 1." in output
    assert failures == 12


async def test_edit_zoomout_and_pan_from_the_console(tmp_path, sqlite_template, tiny_model_dir):
    """/edit, /zoomout and /pan are jobs in the variation thread, charged like any job, with the
    operation in each PNG's manifest; bad regions are refused and charge nothing."""
    import json

    from engine.images import png_metadata

    failures, output = await run_console(
        tmp_path,
        sqlite_template,
        tiny_model_dir,
        [
            "/imagine a red star --n 1 --seed 1",
            "/edit 1 --region right --seed 2 --n 2 a blue ring",
            "/zoomout 1 --n 1",
            "/pan 1 left --n 1",
            "/edit 1 --region 0.5,0.5,0.9,0.2 a cat",
            "/edit 1 a cat",
            "/thread 1",
            "/quota",
        ],
    )
    assert failures == 2, output
    assert '#2 edit of #1:1 "a blue ring": done, 2 images' in output, output
    assert "#3 zoom-out ×2 of #1:1: done" in output and "#4 pan left of #1:1: done" in output
    assert "error: The region 0.5,0.5,0.9,0.2 goes outside the image" in output
    assert "error: Say which part to redraw" in output
    assert '#2 edit of #1:1 "a blue ring" (2 images)' in output and "#4 pan left of #1:1 (1 images)" in output
    assert "195 of 200 images left today" in output
    paths = re.findall(r"image \d:\s+(\S+job-2-\d\.png)", output)
    assert len(paths) == 2
    manifest = png_metadata(Path(paths[0]).read_bytes())
    assert json.loads(manifest["edit"]) == {"op": "region", "box": [0.5, 0.0, 0.5, 1.0]}
