"""Fake platforms for tests and benchmarks: Discord and Slack as in-process aiohttp servers that
the real client libraries (discord.py, slack_sdk/slack_bolt) talk to over loopback.

- recording.py: the base both share — the server's lifecycle, the log of every call it received,
  waiting on that log, and failure injection;
- discord.py (REST API, CDN), discord_gateway.py (the gateway websocket), discord_model.py
  (Discord's objects and command options);
- slack.py (Web API, uploads, response_url, downloads, Socket Mode), slack_requests.py (what
  Slack sends an app, signed), block_kit.py (the Block Kit limits Slack enforces).

Each fake answers as the platform's published API reference says; tests/bot/test_fakes.py checks
that, and the base itself.
"""
