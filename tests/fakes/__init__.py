"""Fake platforms for tests and benchmarks: platforms as in-process aiohttp servers that the real
client libraries (slack_sdk/slack_bolt) talk to over loopback.

- recording.py: the base every fake shares — the server's lifecycle, the log of every call it
  received, waiting on that log, and failure injection;
- slack.py (Web API, uploads, response_url, downloads, Socket Mode), slack_requests.py (what
  Slack sends an app, signed), block_kit.py (the Block Kit limits Slack enforces).

Each fake answers as the platform's published API reference says; tests/bot/test_fakes.py checks
that, and the base itself.
"""
