"""The service: every use case, on SQLite and on PostgreSQL (the `database` fixture)."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
from sqlalchemy import func, select

from engine.domain.errors import (
    InvalidState,
    NotFound,
    NotPermitted,
    PromptRejected,
    QueueUnavailable,
    QuotaExceeded,
    StoreUnavailable,
    UsageError,
    UserBanned,
)
from engine.domain.types import (
    Actor,
    GenerationStatus,
    ImageRef,
    ImagineRequest,
    MessageRole,
    Platform,
    QuotaTarget,
    RenderParams,
    VariationRequest,
)
from engine.domain.views import MessageRef
from engine.store.models import Generation, Image, QuotaLedgerEntry, QuotaUsage, utcnow

ALICE = Actor(Platform.CONSOLE, "team-1", "alice", "Alice")
BOB = Actor(Platform.CONSOLE, "team-1", "bob", "Bob")
ADMIN = Actor(Platform.CONSOLE, "team-1", "root", "Root", is_platform_admin=True)
MOD = Actor(Platform.CONSOLE, "team-1", "mia", "Mia", role_ids=("mods",))
OUTSIDER = Actor(Platform.CONSOLE, "team-2", "eve", "Eve")


def imagine(prompt="a red star on a blue background", n=4, **kw):
    return ImagineRequest(prompt=prompt, params=RenderParams(n=n), **kw)


async def rows(db, model, *where):
    def count(session):
        return session.scalar(select(func.count()).select_from(model).where(*where))

    return await db.run(count)


async def finish(db, generation_id, images=4):
    """Play the worker: mark a job done with stored images (the worker has its own tests)."""

    def done(session):
        generation = session.get(Generation, generation_id)
        generation.status = str(GenerationStatus.DONE)
        generation.finished_at = utcnow()
        for index in range(1, images + 1):
            session.add(
                Image(
                    generation_id=generation_id,
                    index=index,
                    storage_key=f"k/{index}",
                    width=64,
                    height=64,
                    seed=index,
                    sha256="0" * 64,
                    embedding=b"\x00" * 128,
                    embedding_dim=32,
                )
            )

    await db.run(done)


async def ledger_balances(db) -> bool:
    """used == debits - refunds - resets for every usage row, and grants match."""

    def check(session):
        for usage in session.scalars(select(QuotaUsage)):
            entries = session.scalars(
                select(QuotaLedgerEntry).where(
                    QuotaLedgerEntry.user_id == usage.user_id, QuotaLedgerEntry.period_start == usage.period_start
                )
            ).all()
            total = sum(
                e.amount if e.kind == "debit" else -e.amount for e in entries if e.kind in ("debit", "refund", "reset")
            )
            grants = sum(e.amount for e in entries if e.kind == "grant")
            if total != usage.used or grants != usage.granted:
                return False
        return True

    return await db.run(check)


# --- submitting ------------------------------------------------------------------------------


async def test_imagine_queues_and_charges(service, database, queue):
    """An imagine writes a queued job, charges n images and enqueues the job id."""
    submitted = await service.submit_imagine(ALICE, imagine(n=3, seed=42), {"channel": "c1"})
    job = submitted.generation
    assert (job.status, job.cost, job.seed, job.prompt) == ("queued", 3, 42, "a red star on a blue background")
    assert job.reply_target == {"channel": "c1"}
    assert submitted.queue_position == 1
    assert queue.enqueued == [job.id]
    status = await service.quota(ALICE)
    assert (status.used, status.remaining) == (3, 97)
    assert await ledger_balances(database)


async def test_a_status_message_in_the_reply_target_is_recorded_with_the_job(service, deliveries):
    """The adapter's already-posted status message is recorded in the submit's transaction."""
    target = {"channel": "c1", "status_message": {"channel_id": "c1", "message_id": "m1"}}
    job = (await service.submit_imagine(ALICE, imagine(), target)).generation
    assert await deliveries.messages_for(job.id) == [
        MessageRef(channel_id="c1", message_id="m1", generation_id=job.id, image_index=None, role=MessageRole.PROGRESS)
    ]
    assert await deliveries.message_target(Platform.CONSOLE, "c1", "m1") is not None
    other = (await service.submit_imagine(ALICE, imagine(), {"channel": "c1"})).generation
    assert await deliveries.messages_for(other.id) == []


async def test_queue_position_counts_jobs_ahead(service):
    """The second queued job is told it is second in line."""
    await service.submit_imagine(ALICE, imagine())
    second = await service.submit_imagine(BOB, imagine())
    assert second.queue_position == 2


async def test_banned_user_is_refused_without_charge(service, database, queue):
    """A banned user gets the ban message; no job row, no charge, nothing enqueued."""
    await service.ban(ADMIN, "alice", "spam")
    with pytest.raises(UserBanned, match="banned from imagine-bot in this team: spam"):
        await service.submit_imagine(ALICE, imagine())
    assert await rows(database, Generation) == 0
    assert await rows(database, QuotaLedgerEntry) == 0
    assert queue.enqueued == []


async def test_blocked_term_is_refused_without_charge(service, database, queue):
    """A prompt with a blocked term (any case, whole words) is refused and not charged."""
    await service.block_term(ADMIN, "Gore")
    with pytest.raises(PromptRejected, match="blocked \\('gore'\\). Nothing was charged"):
        await service.submit_imagine(ALICE, imagine("lots of GORE here"))
    assert await rows(database, Generation) == 0
    assert (await service.quota(ALICE)).used == 0
    # Whole words only: "gorilla" is fine.
    await service.submit_imagine(ALICE, imagine("a gorilla"))


async def test_the_first_blocked_term_in_order_is_named(service):
    """With several blocked terms in one prompt, the refusal names the first in sorted order
    (the terms are read with the submit's checks, in one statement)."""
    for term in ("zebra", "apple", "mango"):
        await service.block_term(ADMIN, term)
    with pytest.raises(PromptRejected, match="\\('apple'\\)"):
        await service.submit_imagine(ALICE, imagine("a zebra eating a mango and an apple"))
    await service.ban(ADMIN, "alice")  # a ban without a reason still refuses
    with pytest.raises(UserBanned):
        await service.submit_imagine(ALICE, imagine("a pear"))


async def test_new_names_are_kept_on_submit(service, database):
    """A user or team renamed on the platform shows under the new name from the next job."""
    await service.submit_imagine(ALICE, imagine())
    renamed = replace(ALICE, user_name="Alicia")
    job = (await service.submit_imagine(renamed, imagine())).generation
    assert job.requester_name == "Alicia"
    assert (await service.history(renamed)).items[0].requester_name == "Alicia"


async def test_quota_exceeded_says_what_is_left(service, database, queue):
    """A request costing more than what is left is refused with the numbers and reset time."""
    await service.set_quota(ADMIN, QuotaTarget("user", "alice"), 5)
    await service.submit_imagine(ALICE, imagine(n=4))
    with pytest.raises(QuotaExceeded, match="needs 4 images of quota but you have 1 left; your quota resets in"):
        await service.submit_imagine(ALICE, imagine(n=4))
    assert len(queue.enqueued) == 1
    await service.submit_imagine(ALICE, imagine(n=1))  # what is left still works


async def test_broker_down_marks_failed_and_refunds(service, database, queue):
    """When the queue cannot be reached the user is told, the job fails and nothing is charged."""
    queue.down = True
    with pytest.raises(QueueUnavailable, match="render queue is down"):
        await service.submit_imagine(ALICE, imagine())
    job = await service.job_for_actor(ALICE, None)
    assert job.status == GenerationStatus.FAILED
    assert job.delivered_at is not None  # told in the reply; nothing left for delivery
    assert (await service.quota(ALICE)).used == 0
    assert await ledger_balances(database)


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("", "Prompt is empty"),
        ("   ", "Prompt is empty"),
        ("x" * 1001, "1001 characters long"),
        ("bell\x07", "control character"),
        ("\u202eevil", "text-direction control character"),
    ],
)
async def test_bad_prompts_are_refused_before_anything_is_written(service, database, prompt, message):
    """Bad prompts are refused with their own message; no row, no charge."""
    with pytest.raises(UsageError, match=message):
        await service.submit_imagine(ALICE, imagine(prompt))
    assert await rows(database, Generation) == 0


async def test_bad_options_are_refused(service):
    """Out-of-range typed options (e.g. from Discord) get the option's name in the message."""
    with pytest.raises(UsageError, match="--n must be between 1 and 4"):
        await service.submit_imagine(ALICE, ImagineRequest("a cat", params=RenderParams(n=9)))
    with pytest.raises(UsageError, match="Unknown model 'dall-e-3'"):
        await service.submit_imagine(ALICE, ImagineRequest("a cat", model="dall-e-3"))
    with pytest.raises(UsageError, match="--seed must be between 0"):
        await service.submit_imagine(ALICE, ImagineRequest("a cat", seed=-5))


async def test_negative_prompt_is_validated_and_kept(service):
    """A negative prompt is cleaned like a prompt and stored with the job."""
    job = (await service.submit_imagine(ALICE, imagine(negative_prompt="  blurry   text "))).generation
    assert job.negative_prompt == "blurry text"
    with pytest.raises(UsageError, match="Negative prompt contains a control character"):
        await service.submit_imagine(ALICE, imagine(negative_prompt="x\x00"))


# --- variations, rerolls, threads -------------------------------------------------------------


async def test_variation_links_parent_and_thread_root(service, database):
    """A variation of image k records its parent image and the lineage's root."""
    root = (await service.submit_imagine(ALICE, imagine())).generation
    await finish(database, root.id)
    first = (await service.submit_variation(ALICE, VariationRequest(ImageRef(root.id, 2)))).generation
    assert (first.kind, first.parent_generation_id, first.parent_image_index) == ("variation", root.id, 2)
    assert first.thread_root_id == root.id
    assert first.prompt == root.prompt  # shown in history; the render uses the image embedding
    await finish(database, first.id)
    second = (await service.submit_variation(BOB, VariationRequest(ImageRef(first.id, 1)))).generation
    assert second.thread_root_id == root.id  # deeper variations stay in the root's thread
    tree = await service.thread(ALICE, second.id)
    assert tree.generation.id == root.id
    assert [c.generation.id for c in tree.children] == [first.id]
    assert [c.generation.id for c in tree.children[0].children] == [second.id]


async def test_variation_of_latest_grid(service, database):
    """`last:k` means image k of the actor's latest finished job."""
    root = (await service.submit_imagine(ALICE, imagine())).generation
    await finish(database, root.id)
    await service.submit_imagine(ALICE, imagine("still queued"))  # not finished: skipped
    job = (await service.submit_variation(ALICE, VariationRequest(ImageRef(None, 3)))).generation
    assert (job.parent_generation_id, job.parent_image_index) == (root.id, 3)


async def test_variation_errors(service, database):
    """Varying a job that is not done, not there, ambiguous or another team's is refused clearly."""
    root = (await service.submit_imagine(ALICE, imagine())).generation
    with pytest.raises(InvalidState, match=f"Job #{root.id} is still queued"):
        await service.submit_variation(ALICE, VariationRequest(ImageRef(root.id, 1)))
    await finish(database, root.id)
    with pytest.raises(UsageError, match=f"Job #{root.id} has 4 images: say which, e.g. `{root.id}:2`"):
        await service.submit_variation(ALICE, VariationRequest(ImageRef(root.id, None)))
    with pytest.raises(NotFound, match="There is no job #999 in this team"):
        await service.submit_variation(ALICE, VariationRequest(ImageRef(999, 1)))
    with pytest.raises(NotFound, match=f"There is no job #{root.id} in this team"):
        await service.submit_variation(OUTSIDER, VariationRequest(ImageRef(root.id, 1)))
    with pytest.raises(NotFound, match="no finished jobs yet"):
        await service.submit_variation(BOB, VariationRequest(ImageRef(None, 1)))


async def test_reroll_is_charged_to_whoever_asks(service, database):
    """A reroll repeats the request with a new seed and is charged to the person rerolling."""
    original = (await service.submit_imagine(ALICE, imagine(n=2, seed=1, negative_prompt="fog"))).generation
    again = (await service.reroll(BOB, original.id)).generation
    assert (again.kind, again.prompt, again.negative_prompt, again.cost) == ("reroll", original.prompt, "fog", 2)
    assert again.params == {**original.params, "reroll_of": original.id}
    assert (await service.quota(BOB)).used == 2
    assert (await service.quota(ALICE)).used == 2


# --- cancelling ------------------------------------------------------------------------------


async def test_cancel_by_owner_refunds(service, database):
    """The requester can cancel a queued job; it is refunded once."""
    job = (await service.submit_imagine(ALICE, imagine())).generation
    cancelled = await service.cancel(ALICE, job.id)
    assert cancelled.status == GenerationStatus.CANCELLED
    assert (await service.quota(ALICE)).used == 0
    with pytest.raises(InvalidState, match="already cancelled; there is nothing to cancel"):
        await service.cancel(ALICE, job.id)
    assert await ledger_balances(database)


async def test_cancel_permissions(service, database):
    """Only the requester or a moderator may cancel; finished jobs cannot be cancelled."""
    job = (await service.submit_imagine(ALICE, imagine())).generation
    with pytest.raises(NotPermitted, match="Only the person who asked for this job, or a moderator"):
        await service.cancel(BOB, job.id)
    await service.set_moderator_role(ADMIN, "mods", add=True)
    assert (await service.cancel(MOD, job.id)).status == GenerationStatus.CANCELLED
    done = (await service.submit_imagine(ALICE, imagine())).generation
    await finish(database, done.id)
    with pytest.raises(InvalidState, match="already done"):
        await service.cancel(ALICE, done.id)


# --- history and quota ------------------------------------------------------------------------


async def test_history_pages_newest_first(service):
    """History is paged, newest first, and says how many pages there are."""
    for i in range(12):
        await service.submit_imagine(ALICE, imagine(f"prompt {i}", n=1))
    first = await service.history(ALICE, 1)
    assert (first.total, first.pages, len(first.items)) == (12, 2, 10)
    assert first.items[0].prompt == "prompt 11"
    second = await service.history(ALICE, 2)
    assert [j.prompt for j in second.items] == ["prompt 1", "prompt 0"]
    with pytest.raises(UsageError, match="There are only 2 page"):
        await service.history(ALICE, 3)
    assert (await service.history(BOB, 1)).total == 0


# --- moderation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "action",
    [
        lambda s: s.set_quota(BOB, QuotaTarget("user", "alice"), 1),
        lambda s: s.grant_quota(BOB, QuotaTarget("user", "alice"), 1),
        lambda s: s.reset_quota(BOB, QuotaTarget("user", "alice")),
        lambda s: s.ban(BOB, "alice"),
        lambda s: s.unban(BOB, "alice"),
        lambda s: s.block_term(BOB, "x"),
        lambda s: s.unblock_term(BOB, "x"),
        lambda s: s.audit_log(BOB),
        lambda s: s.blocked_terms(BOB),
    ],
)
async def test_moderator_actions_need_a_moderator(service, action):
    """Every moderator action refuses members without the right."""
    with pytest.raises(NotPermitted, match="Only moderators can"):
        await action(service)


async def test_moderator_roles_are_chosen_by_admins(service):
    """Admins choose moderator roles; members of such a role then moderate."""
    with pytest.raises(NotPermitted, match="Only server/workspace admins"):
        await service.set_moderator_role(MOD, "mods", add=True)
    await service.set_moderator_role(ADMIN, "mods", add=True)
    assert await service.is_moderator(MOD)
    await service.ban(MOD, "bob", None)
    await service.set_moderator_role(ADMIN, "mods", add=False)
    assert not await service.is_moderator(MOD)


async def test_quota_set_grant_reset_for_a_user(service, database):
    """A user's limit, today's grant and today's reset all show in their quota."""
    await service.set_quota(ADMIN, QuotaTarget("user", "alice"), 4)
    await service.submit_imagine(ALICE, imagine(n=4))
    with pytest.raises(QuotaExceeded):
        await service.submit_imagine(ALICE, imagine(n=1))
    await service.grant_quota(ADMIN, QuotaTarget("user", "alice"), 2)
    status = await service.quota(ALICE)
    assert (status.limit, status.granted, status.used, status.remaining) == (4, 2, 4, 2)
    await service.submit_imagine(ALICE, imagine(n=2))
    await service.reset_quota(ADMIN, QuotaTarget("user", "alice"))
    assert (await service.quota(ALICE)).used == 0
    assert await ledger_balances(database)


async def test_quota_for_roles_and_team(service, database):
    """Role limits apply to members; role grants and resets reach every member."""
    artist = replace(BOB, role_ids=("artists",))
    await service.set_quota(ADMIN, QuotaTarget("team"), 2)
    await service.set_quota(ADMIN, QuotaTarget("role", "artists"), 6)
    assert (await service.quota(ALICE)).limit == 2
    assert (await service.quota(artist)).limit == 6
    await service.submit_imagine(artist, imagine(n=4))
    await service.submit_imagine(artist, imagine(n=2))
    with pytest.raises(QuotaExceeded):
        await service.submit_imagine(artist, imagine(n=1))
    await service.grant_quota(ADMIN, QuotaTarget("role", "artists"), 3)
    assert (await service.quota(artist)).remaining == 3
    await service.reset_quota(ADMIN, QuotaTarget("role", "artists"))
    assert (await service.quota(artist)).used == 0
    await service.submit_imagine(artist, imagine(n=4))  # the reset really freed the quota
    assert (await service.quota(artist)).used == 4
    await service.set_quota(ADMIN, QuotaTarget("role", "artists"), None)
    assert (await service.quota(artist)).remaining is None  # unlimited
    assert await ledger_balances(database)


async def test_quota_inputs_are_checked(service):
    """Negative limits and empty grants are refused with clear messages."""
    with pytest.raises(UsageError, match="A quota cannot be negative"):
        await service.set_quota(ADMIN, QuotaTarget("user", "bob"), -1)
    with pytest.raises(UsageError, match="Grant a positive number"):
        await service.grant_quota(ADMIN, QuotaTarget("user", "bob"), 0)


async def test_ban_unban_and_audit(service):
    """Bans and unbans are audited, double bans and unknown unbans are refused."""
    await service.ban(ADMIN, "bob", "spam")
    with pytest.raises(InvalidState, match="already banned"):
        await service.ban(ADMIN, "bob")
    with pytest.raises(UsageError, match="cannot ban yourself"):
        await service.ban(ADMIN, "root")
    await service.unban(ADMIN, "bob")
    with pytest.raises(NotFound, match="is not banned"):
        await service.unban(ADMIN, "bob")
    await service.submit_imagine(BOB, imagine())
    log = await service.audit_log(ADMIN)
    assert [(e.action, e.target) for e in log] == [("unban", "user bob"), ("ban", "user bob")]
    assert log[1].details == {"reason": "spam"}


async def test_block_and_unblock_terms(service):
    """Terms are normalised, listed for moderators, and can be unblocked again."""
    await service.block_term(ADMIN, "  Very   BAD ")
    assert await service.blocked_terms(ADMIN) == ["very bad"]
    with pytest.raises(InvalidState, match="already blocked"):
        await service.block_term(ADMIN, "very bad")
    with pytest.raises(PromptRejected):
        await service.submit_imagine(ALICE, imagine("something very   bad"))
    await service.unblock_term(ADMIN, "VERY BAD")
    await service.submit_imagine(ALICE, imagine("something very bad"))
    with pytest.raises(NotFound, match="is not blocked"):
        await service.unblock_term(ADMIN, "very bad")
    with pytest.raises(UsageError, match="Say which term"):
        await service.block_term(ADMIN, "   ")


async def test_teams_are_separate(service, database):
    """Bans, terms and jobs of one team do not reach another."""
    await service.ban(ADMIN, "eve")
    await service.block_term(ADMIN, "cats")
    job = (await service.submit_imagine(OUTSIDER, imagine("cats"))).generation
    with pytest.raises(NotFound):
        await service.cancel(ALICE, job.id)


# --- concurrency and failures ------------------------------------------------------------------


async def test_concurrent_submits_respect_the_quota(service, database, queue):
    """Many concurrent submits by one user are charged atomically: exactly the quota passes."""
    await service.set_quota(ADMIN, QuotaTarget("user", "alice"), 10)
    results = await asyncio.gather(
        *(service.submit_imagine(ALICE, imagine(n=1)) for _ in range(30)), return_exceptions=True
    )
    accepted = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, QuotaExceeded)]
    assert (len(accepted), len(refused)) == (10, 20)
    assert (await service.quota(ALICE)).used == 10
    assert await rows(database, Generation) == 10
    assert await ledger_balances(database)


@pytest.mark.postgres
async def test_200_concurrent_submits_against_50_on_postgres(postgres_url, queue):
    """200 concurrent one-image submits by one user with a quota of 50: exactly 50 accepted."""
    from engine.service import ImagineService, ServicePolicy
    from engine.store.db import Database

    db = Database(postgres_url, pool_size=20, max_overflow=30)
    service = ImagineService(db, queue, ServicePolicy(default_model="tiny-random"))
    try:
        await service.set_quota(ADMIN, QuotaTarget("user", "alice"), 50)
        results = await asyncio.gather(
            *(service.submit_imagine(ALICE, imagine(n=1)) for _ in range(200)), return_exceptions=True
        )
        errors = [r for r in results if isinstance(r, Exception) and not isinstance(r, QuotaExceeded)]
        assert errors == []
        assert sum(not isinstance(r, Exception) for r in results) == 50
        assert len(queue.enqueued) == 50
        assert (await service.quota(ALICE)).used == 50
        assert await rows(db, Generation) == 50
        assert await ledger_balances(db)
    finally:
        await db.dispose()


async def test_database_unreachable_is_a_clear_error(queue):
    """With the database down every call raises StoreUnavailable (nothing crashes, nothing charged)."""
    from engine.service import ImagineService, ServicePolicy
    from engine.store.db import Database

    for url in ("postgresql://postgres@127.0.0.1:1/nowhere", "sqlite:////nonexistent-dir/x/imagine.db"):
        db = Database(url)
        service = ImagineService(db, queue, ServicePolicy(default_model="m"))
        with pytest.raises(StoreUnavailable, match="cannot reach its database"):
            await service.submit_imagine(ALICE, imagine())
        with pytest.raises(StoreUnavailable):
            await service.history(ALICE)
        await db.dispose()
    assert queue.enqueued == []


# --- uploads, blends, upscales, statistics, events --------------------------------------------


def png_bytes(size=(16, 16), colour=(200, 10, 10)) -> bytes:
    import io

    from PIL import Image as PILImage

    buffer = io.BytesIO()
    PILImage.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def upload_service(database, queue, tmp_path):
    from engine.image_files import ImageStore
    from engine.service import ImagineService, ServicePolicy

    return ImagineService(
        database,
        queue,
        ServicePolicy(default_model="tiny-random", max_upload_bytes=50_000, max_upload_pixels=256 * 256),
        store=ImageStore(tmp_path / "images"),
    )


async def test_upload_variation_stores_a_clean_png(upload_service, tmp_path):
    """An uploaded image is stored re-encoded and a variation job refers to it."""
    job = (await upload_service.submit_upload_variation(ALICE, png_bytes(), RenderParams(n=2))).generation
    assert job.params["source"] == "upload"
    assert (tmp_path / "images" / job.params["source_key"]).exists()
    assert job.cost == 2


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not an image at all", "not an image imagine-bot can read"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, "not an image imagine-bot can read"),
        (png_bytes((512, 512)), "512x512 pixels; at most 65,536 pixels"),
        (b"x" * 60_000, "That file is 60 KB; images up to 50 KB are accepted"),
    ],
)
async def test_bad_uploads_are_refused_and_nothing_is_stored(upload_service, database, tmp_path, data, message):
    """Non-images, oversized files and too many pixels are refused before anything is written."""
    with pytest.raises(UsageError, match=message):
        await upload_service.submit_upload_variation(ALICE, data, RenderParams())
    assert await rows(database, Generation) == 0
    assert not (tmp_path / "images").exists() or not any((tmp_path / "images").rglob("*.png"))


async def test_decompression_bomb_is_refused(upload_service):
    """A small file that declares a huge image is refused without decoding it."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    bomb = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 1000))
        + chunk(b"IEND", b"")
    )
    with pytest.raises(UsageError, match="pixels"):
        await upload_service.submit_upload_variation(ALICE, bomb, RenderParams())


async def test_refused_upload_job_leaves_no_file(upload_service, tmp_path):
    """When a banned user uploads, the stored file is removed again."""
    await upload_service.ban(ADMIN, "alice")
    with pytest.raises(UserBanned):
        await upload_service.submit_upload_variation(ALICE, png_bytes(), RenderParams())
    assert not any((tmp_path / "images").rglob("*.png"))


async def test_blend_records_its_sources(service, database):
    """A blend names its 2-4 sources and weights and hangs under the first source's thread."""
    a = (await service.submit_imagine(ALICE, imagine())).generation
    b = (await service.submit_imagine(ALICE, imagine("a green ring"))).generation
    await finish(database, a.id)
    await finish(database, b.id)
    job = (await service.submit_blend(ALICE, [ImageRef(a.id, 1), ImageRef(b.id, 2)], [1, 3])).generation
    assert job.kind == "blend" and job.thread_root_id == a.id
    assert [s["label"] for s in job.params["sources"]] == [f"#{a.id}:1", f"#{b.id}:2"]
    assert [s["weight"] for s in job.params["sources"]] == [1, 3]
    assert job.prompt == f"blend of #{a.id}:1 + #{b.id}:2"


@pytest.mark.parametrize(
    ("count", "weights", "message"),
    [
        (1, None, "Blend 2 to 4 images, got 1"),
        (5, None, "Blend 2 to 4 images, got 5"),
        (2, [1.0], "one weight per image"),
        (2, [0.0, 0.0], "not all zero"),
        (2, [-1.0, 2.0], "zero or more"),
    ],
)
async def test_blend_errors(service, database, count, weights, message):
    """Blends of too few or too many images, or with bad weights, are refused clearly."""
    a = (await service.submit_imagine(ALICE, imagine())).generation
    await finish(database, a.id)
    with pytest.raises(UsageError, match=message):
        await service.submit_blend(ALICE, [ImageRef(a.id, 1)] * count, weights)


async def test_upscale_costs_one_image(service, database):
    """An upscale of one grid image is a one-image job linked to its parent."""
    a = (await service.submit_imagine(ALICE, imagine(n=4))).generation
    await finish(database, a.id)
    job = (await service.submit_upscale(BOB, ImageRef(a.id, 3))).generation
    assert (job.kind, job.cost, job.parent_label) == ("upscale", 1, f"#{a.id}:3")
    assert (await service.quota(BOB)).used == 1


async def test_stats_by_status_user_and_role(service, database, queue):
    """Moderators see jobs by status, failures, and usage by user and by role."""
    artist = replace(BOB, role_ids=("artists",))
    a = (await service.submit_imagine(ALICE, imagine(n=4))).generation
    await finish(database, a.id)
    await service.submit_imagine(artist, imagine(n=2))
    queue.down = True
    with pytest.raises(QueueUnavailable):
        await service.submit_imagine(artist, imagine(n=1))
    stats = await service.stats(ADMIN)
    assert stats.jobs == 3 and stats.images == 6
    assert stats.by_status == {"done": 1, "queued": 1, "failed": 1}
    assert stats.failures == [("the render queue could not be reached", 1)]
    assert [(r.who, r.jobs, r.images) for r in stats.by_user] == [("Alice", 1, 4), ("Bob", 2, 2)]
    assert [(r.who, r.jobs, r.images) for r in stats.by_role] == [("artists", 2, 2)]
    with pytest.raises(NotPermitted):
        await service.stats(BOB)


async def test_platform_events_are_handled_once(database):
    """The same event id is new once and a repeat afterwards, per platform."""
    from engine.service import ProcessedEvents

    events = ProcessedEvents(database)
    assert await events.first_time(Platform.SLACK, "Ev1")
    assert not await events.first_time(Platform.SLACK, "Ev1")
    assert await events.first_time(Platform.DISCORD, "Ev1")
    assert await events.forget_events_before(utcnow() + __import__("datetime").timedelta(seconds=1)) == 2
    assert await events.first_time(Platform.SLACK, "Ev1")


async def test_text_diff_variation(service, database):
    """`--toward` turns a variation toward a text, starting from the parent's prompt."""
    root = (await service.submit_imagine(ALICE, imagine("a red star"))).generation
    await finish(database, root.id)
    job = (
        await service.submit_variation(ALICE, VariationRequest(ImageRef(root.id, 1), toward="  in winter ", amount=0.4))
    ).generation
    assert (job.params["edit_toward"], job.params["edit_from"], job.params["edit_amount"]) == (
        "in winter",
        "a red star",
        0.4,
    )
    await service.block_term(ADMIN, "gore")
    with pytest.raises(PromptRejected):
        await service.submit_variation(ALICE, VariationRequest(ImageRef(root.id, 1), toward="more gore"))
    with pytest.raises(UsageError, match="--amount goes with --toward"):
        await service.submit_variation(ALICE, VariationRequest(ImageRef(root.id, 1), amount=0.3))
    with pytest.raises(UsageError, match="The --toward text is empty"):
        await service.submit_variation(ALICE, VariationRequest(ImageRef(root.id, 1), toward="  "))


async def test_interpolation_strip(service, database):
    """A strip runs from one image to another in 3-8 frames, charged per frame."""
    a = (await service.submit_imagine(ALICE, imagine())).generation
    await finish(database, a.id)
    job = (await service.submit_blend(ALICE, [ImageRef(a.id, 1), ImageRef(a.id, 4)], strip=5)).generation
    assert (job.cost, job.params["strip"], job.prompt) == (5, 5, f"strip from #{a.id}:1 to #{a.id}:4")
    with pytest.raises(UsageError, match="--strip must be between 3 and 8 frames, got 9"):
        await service.submit_blend(ALICE, [ImageRef(a.id, 1), ImageRef(a.id, 4)], strip=9)
    with pytest.raises(UsageError, match="give 2, got 3"):
        await service.submit_blend(ALICE, [ImageRef(a.id, 1)] * 3, strip=4)


async def test_a_large_upload_does_not_stall_the_event_loop(database, queue, tmp_path):
    """Decoding and re-encoding a legal 4096×4096 upload runs off the event loop: other work on
    the loop (other users' commands, Discord's 3 s acknowledgements) keeps being served."""
    import io
    import time

    import numpy as np
    from PIL import Image as PILImage

    from engine.image_files import ImageStore
    from engine.service import ImagineService, ServicePolicy

    service = ImagineService(
        database, queue, ServicePolicy(default_model="tiny-random"), store=ImageStore(tmp_path / "images")
    )
    gradient = np.add.outer(np.arange(4096), np.arange(4096)).astype(np.uint8)
    buffer = io.BytesIO()
    PILImage.fromarray(np.stack([gradient] * 3, axis=-1)).save(buffer, format="PNG")
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticking = asyncio.create_task(ticker())
    started = time.perf_counter()
    await service.submit_upload_variation(ALICE, buffer.getvalue(), RenderParams(n=1))
    took = time.perf_counter() - started
    done.set()
    await ticking
    assert took > 0.3  # the work is real...
    assert max(gaps) < 0.25  # ...and the loop never stopped for it


async def test_ids_past_what_the_schema_holds_are_refused_by_name(service):
    """On SQLite and PostgreSQL alike: a job number past INTEGER names no job, and a user id
    longer than the 64 characters stored is refused — never a database error or the apology."""
    from engine.domain.errors import NotFound

    with pytest.raises(NotFound, match="There is no job #999999999999"):
        await service.job_for_actor(ALICE, 999999999999)
    with pytest.raises(NotFound, match="There is no job #100000000000000000000"):
        await service.thread(ALICE, 10**20)
    with pytest.raises(UsageError, match="That user is not a valid id"):
        await service.ban(ADMIN, "U" * 70)
    with pytest.raises(UsageError, match="There is no page"):
        await service.history(ALICE, 10**20)
