"""`imagine-bot slack` as an operator runs it: configured by IMAGINE_SLACK_* variables."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import sys

from bot.slack import app as slack_app
from tests.bot.slack.conftest import ALICE, post_form
from tests.fakes.slack import BOT_TOKEN
from tests.fakes.slack_requests import SIGNING_SECRET, slash_command


def test_refuses_to_start_without_its_tokens(monkeypatch, capsys):
    """Without a bot token and signing secret it exits 2 and names the missing variables."""
    for name in list(os.environ):
        if name.startswith("IMAGINE_SLACK_"):
            monkeypatch.delenv(name)
    assert slack_app.main() == 2
    err = capsys.readouterr().err
    assert "IMAGINE_SLACK_BOT_TOKEN" in err and "IMAGINE_SLACK_SIGNING_SECRET" in err

    monkeypatch.setenv("IMAGINE_SLACK_BOT_TOKEN", "xoxb-1")
    monkeypatch.setenv("IMAGINE_SLACK_MODE", "socket")
    assert slack_app.main() == 2
    assert "IMAGINE_SLACK_APP_TOKEN" in capsys.readouterr().err


async def test_imagine_bot_slack_serves_until_sigterm(tmp_path, sqlite_template, fake_slack, http):
    """`imagine-bot slack` signs in, serves signed requests with its embedded worker, exits 0 on SIGTERM."""
    data = tmp_path / "data"
    data.mkdir()
    shutil.copyfile(sqlite_template, data / "imagine.db")
    env = {
        **os.environ,
        "IMAGINE_DATA_DIR": str(data),
        "IMAGINE_RENDER_BACKEND": "noop",
        "IMAGINE_OPS_PORT": "0",
        "IMAGINE_SLACK_BOT_TOKEN": BOT_TOKEN,
        "IMAGINE_SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "IMAGINE_SLACK_API_URL": fake_slack.api_url,
        "IMAGINE_SLACK_HOST": "127.0.0.1",
        "IMAGINE_SLACK_PORT": "0",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "slack", env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        port = None
        while port is None:
            line = (await asyncio.wait_for(process.stderr.readline(), 60)).decode()
            assert line, "imagine-bot slack exited before it was ready"
            if match := re.search(r"ready \(http://127\.0\.0\.1:(\d+)/slack/events\)", line):
                port = int(match.group(1))
        assert fake_slack.received("auth.test")
        status, _ = await post_form(
            http,
            f"http://127.0.0.1:{port}/slack/events",
            slash_command("/imagine", "a red star --n 1", user=ALICE, response_url=fake_slack.response_url()),
        )
        assert status == 200
        await fake_slack.wait_for("files.completeUploadExternal", timeout=60)
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 60) == 0
