"""`python -m bot ...` is `imagine-bot ...`."""

from bot.cli import main

raise SystemExit(main())
