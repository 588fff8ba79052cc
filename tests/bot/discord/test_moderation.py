"""/imagine-admin: rights are checked in code on every call (Manage Server, or a moderator role
the server chose), answers are private, and every action is in the audit log."""

from __future__ import annotations

from tests.bot.discord.conftest import ADMIN, ALICE, ARTISTS_ROLE, BOB, GUILD_ID, MOD, MOD_ROLE
from tests.fakes.discord_model import option, subcommand

EPHEMERAL = 64


def role_payload(role_id: int, name: str) -> dict:
    return {
        "id": str(role_id),
        "name": name,
        "permissions": "0",
        "position": 1,
        "color": 0,
        "hoist": False,
        "managed": False,
        "mentionable": True,
        "flags": 0,
    }


def mentionable(name: str, role_id: int, role_name: str) -> tuple[dict, dict]:
    """A role chosen in a mentionable option: the option, and its `resolved` entry."""
    return option(name, str(role_id), kind=9), {"roles": {str(role_id): role_payload(role_id, role_name)}}


async def admin(harness, options, *, user, resolved=None) -> str:
    """Run /imagine-admin with these options and return the private answer's text."""
    fake = harness.fake
    mark = fake.mark()
    payload = await harness.slash("imagine-admin", options, user=user, resolved=resolved)
    callback = await fake.wait_for("POST", rf"/interactions/{payload['id']}/{payload['token']}/callback", since=mark)
    if callback.body["type"] == 4:  # refused before deferring
        assert callback.body["data"]["flags"] == EPHEMERAL
        return callback.body["data"]["content"]
    assert callback.body == {"type": 5, "data": {"flags": EPHEMERAL}}
    answer = await fake.wait_for("PATCH", rf"/webhooks/\d+/{payload['token']}/messages/@original", since=mark)
    return answer.content


async def test_a_member_without_rights_is_refused_and_nothing_is_audited(harness):
    """Without Manage Server or a moderator role, every admin command is refused (privately)."""
    role, resolved = mentionable("target", ARTISTS_ROLE, "artists")
    refused = await admin(
        harness,
        [subcommand("quota", [subcommand("set", [role, option("images", 5)])], group=True)],
        user=BOB,
        resolved=resolved,
    )
    assert refused == "Only moderators can set quotas (server admins, or members of a moderator role)."
    refused = await admin(
        harness,
        [subcommand("ban", [option("user", str(ALICE.id), kind=6)])],
        user=BOB,
        resolved={"users": {str(ALICE.id): ALICE.payload()}},
    )
    assert refused.startswith("Only moderators can ban users")
    assert await admin(harness, [subcommand("audit")], user=ADMIN) == "No moderator actions yet."


async def test_manage_server_sets_a_role_quota_that_its_members_get(harness):
    """Manage Server sets 6/day for a role; a member of it sees 6 in /quota; the audit log has it."""
    role, resolved = mentionable("target", ARTISTS_ROLE, "artists")
    done = await admin(
        harness,
        [subcommand("quota", [subcommand("set", [role, option("images", 6)])], group=True)],
        user=ADMIN,
        resolved=resolved,
    )
    assert done == f"Daily quota for role {ARTISTS_ROLE} set to 6 images/day."

    fake = harness.fake
    mark = fake.mark()
    payload = await harness.slash("quota", user=BOB)
    answer = await fake.wait_for("PATCH", rf"/webhooks/\d+/{payload['token']}/messages/@original", since=mark)
    assert answer.content.startswith(f"6 of 6 images left today (6/day from role {ARTISTS_ROLE});")
    assert fake.original(payload["token"])["flags"] & EPHEMERAL

    audit = await admin(harness, [subcommand("audit")], user=ADMIN)
    assert f"admin: quota.set role {ARTISTS_ROLE} (limit=6)" in audit


async def test_everyone_quota_applies_to_every_member(harness):
    """@everyone (the guild's id as a role) is a target like any role."""
    role, resolved = mentionable("target", GUILD_ID, "@everyone")
    await admin(
        harness,
        [subcommand("quota", [subcommand("set", [role, option("images", 2)])], group=True)],
        user=ADMIN,
        resolved=resolved,
    )
    fake = harness.fake
    mark = fake.mark()
    payload = await harness.slash("imagine", [option("prompt", "a red star")], user=ALICE)
    await fake.wait_for("POST", rf"/webhooks/\d+/{payload['token']}", since=mark)
    followup = fake.received("POST", rf"/webhooks/\d+/{payload['token']}", since=mark)[0]
    assert followup.body["flags"] == EPHEMERAL
    assert followup.body["content"].startswith("This needs 4 images of quota but you have 2 left")
    assert fake.received("DELETE", rf"/webhooks/\d+/{payload['token']}/messages/@original", since=mark)


async def test_a_moderator_role_chosen_by_an_admin_gets_the_rights(harness):
    """An admin makes `mods` moderators; a member of it can then ban; the banned member is refused."""
    role, resolved = mentionable("role", MOD_ROLE, "mods")
    done = await admin(
        harness, [subcommand("mod-role", [option("action", "add"), {**role, "type": 8}])], user=ADMIN, resolved=resolved
    )
    assert done == f"Members of role {MOD_ROLE} are now imagine-bot moderators."
    banned = await admin(
        harness,
        [subcommand("ban", [option("user", str(BOB.id), kind=6), option("reason", "spam @everyone")])],
        user=MOD,
        resolved={"users": {str(BOB.id): BOB.payload()}},
    )
    assert banned == f"User {BOB.id} is banned: spam @\u200beveryone"

    fake = harness.fake
    mark = fake.mark()
    payload = await harness.slash("imagine", [option("prompt", "a red star")], user=BOB)
    followup = await fake.wait_for("POST", rf"/webhooks/\d+/{payload['token']}", since=mark)
    assert followup.body["content"] == "You are banned from imagine-bot in this team: spam @\u200beveryone"


async def test_blocked_terms_stats_and_bad_options(harness):
    """block-term refuses prompts with it; stats counts jobs; a bad option is refused before deferring."""
    assert (
        await admin(harness, [subcommand("block-term", [option("term", "Gore")])], user=ADMIN)
        == "Prompts containing 'gore' are now refused."
    )
    fake = harness.fake
    mark = fake.mark()
    payload = await harness.slash("imagine", [option("prompt", "some gore here")], user=ALICE)
    followup = await fake.wait_for("POST", rf"/webhooks/\d+/{payload['token']}", since=mark)
    assert (
        followup.body["content"] == "Your prompt contains a term this team has blocked ('gore'). Nothing was charged."
    )

    await harness.imagine("a red star", user=BOB)
    stats = await admin(harness, [subcommand("stats", [option("days", 7)])], user=ADMIN)
    assert stats.startswith("Last 7 days: 1 jobs, 4 images charged (1 done).")
    # Past the option's declared range: refused by the command tree, like every option value.
    assert (
        await admin(harness, [subcommand("stats", [option("days", 400)])], user=ADMIN)
        == "--days must be between 1 and 90, got 400."
    )
    assert (
        await admin(harness, [subcommand("quota", [subcommand("set")], group=True)], user=ADMIN)
        == "Give either a number of images or unlimited: True."
    )
