"""The Slack front-end: slack_bolt's AsyncApp over HTTP (Events API + interactivity on one
aiohttp endpoint) or Socket Mode. Ack first, work in lazy listeners, results through the shared
delivery loop. Entry point: `imagine-bot slack` → `bot.slack.app.main()`."""
