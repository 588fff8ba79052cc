"""The team gallery: a small web page per team, reached through signed links the bot gives."""
