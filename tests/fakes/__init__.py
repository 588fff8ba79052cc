"""Fake platforms for tests and benchmarks: platforms as in-process aiohttp servers that the real
client libraries talk to over loopback.

- recording.py: the base every fake shares — the server's lifecycle, the log of every call it
  received, waiting on that log, and failure injection.

tests/bot/test_fakes.py checks the base itself.
"""
