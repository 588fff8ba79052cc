"""The Discord front-end: slash commands, restart-proof buttons, reactions and variation threads.

client.py        the discord.Client: intents, wiring, setup (`ImagineClient`)
slash.py         the slash commands and their typed options
interactions.py  commands and buttons: defer, translate, run, answer
reactions.py     🔁 / 1️⃣–4️⃣ / ❌ / ✉️ on the bot's messages
delivery.py      status messages, progress and results (the DeliveryTarget)
threads.py       one variation thread per lineage
buttons.py       DynamicItem buttons (state in custom_id)
actors.py        a member → the neutral Actor
render.py        escaping, limits, files
config.py        IMAGINE_DISCORD_* settings
app.py           `imagine-bot discord`
"""
