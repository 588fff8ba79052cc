"""SQLAlchemy 2 models: everything durable imagine-bot knows.

The schema is created and changed only by alembic (migrations/); tests check that these models
and the migrations agree (an empty autogenerate diff) on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Named constraints: alembic's batch mode on SQLite rebuilds tables and needs the names.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every database (SQLite would hand back naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[str]: JSON}


class Team(Base):
    """A Discord guild, a Slack workspace, or the local console."""

    __tablename__ = "teams"
    __table_args__ = (UniqueConstraint("platform", "external_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    platform: Mapped[str] = mapped_column(String(16))
    external_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200), default="")
    #: Roles (Discord role ids, Slack user group ids) whose members are moderators.
    moderator_role_ids: Mapped[list[str]] = mapped_column(default=list)
    #: Days to keep jobs and images (None: the deployment's default; 0: keep everything).
    retention_days: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class User(Base):
    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("team_id", "external_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    external_id: Mapped[str] = mapped_column(String(64))
    display_name: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    team: Mapped[Team] = relationship(lazy="joined")


class Generation(Base):
    """One job: an imagine, variation, reroll, blend or upscale, and its lifecycle."""

    __tablename__ = "generations"
    __table_args__ = (
        Index("ix_generations_status_id", "status", "id"),
        Index("ix_generations_requester_id_id", "requester_id", "id"),
        Index("ix_generations_platform_delivered_at", "platform", "delivered_at"),
        CheckConstraint("progress >= 0 AND progress <= 1", name="progress_range"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"), index=True)
    requester_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    platform: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    prompt: Mapped[str] = mapped_column(Text, default="")
    negative_prompt: Mapped[str | None] = mapped_column(Text)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    seed: Mapped[int] = mapped_column(BigInteger)
    model_id: Mapped[str] = mapped_column(String(300))
    #: The image this job varies/upscales (None for a fresh imagine).
    parent_image_id: Mapped[int | None] = mapped_column(
        ForeignKey("images.id", ondelete="SET NULL", use_alter=True), index=True
    )
    #: The first generation of the variation lineage this job belongs to.
    thread_root_id: Mapped[int | None] = mapped_column(ForeignKey("generations.id", ondelete="SET NULL"), index=True)
    #: The requester's roles when they asked (for usage-by-role statistics).
    requester_role_ids: Mapped[list[str]] = mapped_column(default=list)
    #: Where the adapter should deliver the result (channel, interaction token, thread, ...).
    reply_target: Mapped[dict[str, Any]] = mapped_column(default=dict)
    cost: Mapped[int] = mapped_column(Integer, default=0)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    stage: Mapped[str | None] = mapped_column(String(32))
    error: Mapped[str | None] = mapped_column(Text)
    task_id: Mapped[str | None] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(200))
    #: Set while this job renders in another job's batch (dynamic batching): that job's task
    #: owns it, and if that worker dies, the redelivered task re-renders both.
    batch_leader_id: Mapped[int | None] = mapped_column(ForeignKey("generations.id", ondelete="SET NULL"), index=True)
    #: Reproducibility record: weights hash, scheduler, resolved steps/guidance, library versions.
    render_info: Mapped[dict[str, Any]] = mapped_column(default=dict)
    grid_key: Mapped[str | None] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    render_ms: Mapped[int | None] = mapped_column(Integer)
    #: Renewed every few seconds by the worker rendering the job: a running job whose heartbeat
    #: is older than the lease has lost its worker and goes back on the queue.
    heartbeat_at: Mapped[datetime | None]
    #: When the job's Celery message was last published.
    enqueued_at: Mapped[datetime | None]
    delivery_claimed_at: Mapped[datetime | None]
    #: The token of the bot replica's claim the delivery lease belongs to (only it may mark the
    #: job delivered), and how many claims there were: a second one means an earlier delivery
    #: may have posted part of the result.
    delivery_claim: Mapped[str | None] = mapped_column(String(32))
    delivery_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    delivered_at: Mapped[datetime | None]

    requester: Mapped[User] = relationship(lazy="joined")
    team: Mapped[Team] = relationship(lazy="joined")
    images: Mapped[list[Image]] = relationship(
        back_populates="generation",
        order_by="Image.index",
        foreign_keys="Image.generation_id",
        lazy="selectin",
    )
    parent_image: Mapped[Image | None] = relationship(foreign_keys=[parent_image_id], lazy="joined", post_update=True)


class Image(Base):
    __tablename__ = "images"
    __table_args__ = (UniqueConstraint("generation_id", "index"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    generation_id: Mapped[int] = mapped_column(ForeignKey("generations.id", ondelete="CASCADE"))
    index: Mapped[int] = mapped_column(Integer)  # 1..4, as users count
    storage_key: Mapped[str] = mapped_column(String(300))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    #: The CLIP image embedding (float32, little-endian): variations and blends start from it.
    embedding: Mapped[bytes | None] = mapped_column(LargeBinary)
    embedding_dim: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    generation: Mapped[Generation] = relationship(back_populates="images", foreign_keys=[generation_id])


class QuotaPolicy(Base):
    """A daily image limit for the team (subject ""), a role, or one user."""

    __tablename__ = "quota_policies"
    __table_args__ = (
        UniqueConstraint("team_id", "scope", "subject"),
        CheckConstraint("daily_limit IS NULL OR daily_limit >= 0", name="limit_non_negative"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    scope: Mapped[str] = mapped_column(String(8))  # team | role | user
    subject: Mapped[str] = mapped_column(String(64), default="")
    #: None: this row sets no limit (it may exist only for a grant or a reset).
    daily_limit: Mapped[int | None] = mapped_column(Integer)
    unlimited: Mapped[bool] = mapped_column(default=False)
    bonus: Mapped[int] = mapped_column(Integer, default=0)
    bonus_day: Mapped[datetime | None]
    reset_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class QuotaUsage(Base):
    """A user's images used (and granted) in one period; the row a debit locks and updates."""

    __tablename__ = "quota_usage"
    __table_args__ = (
        UniqueConstraint("user_id", "period_start"),
        CheckConstraint("used >= 0", name="used_non_negative"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    period_start: Mapped[datetime]
    used: Mapped[int] = mapped_column(Integer, default=0)
    granted: Mapped[int] = mapped_column(Integer, default=0)
    #: The latest role reset already applied to this row.
    reset_applied_at: Mapped[datetime | None]


class QuotaLedgerEntry(Base):
    """Every debit, refund, grant and reset, with its reason and job: the quota's audit trail."""

    __tablename__ = "quota_ledger"
    __table_args__ = (
        # One debit and at most one refund per job, whatever retries or races happen.
        UniqueConstraint("generation_id", "kind"),
        Index("ix_quota_ledger_user_id_period_start", "user_id", "period_start"),
        CheckConstraint("amount >= 0", name="amount_non_negative"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    generation_id: Mapped[int | None] = mapped_column(ForeignKey("generations.id", ondelete="SET NULL"))
    period_start: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(8))  # debit | refund | grant | reset
    amount: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(String(200), default="")
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Ban(Base):
    __tablename__ = "bans"
    __table_args__ = (UniqueConstraint("team_id", "user_external_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    user_external_id: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(String(500))
    banned_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class BlockedTerm(Base):
    __tablename__ = "blocked_terms"
    __table_args__ = (UniqueConstraint("team_id", "term"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    term: Mapped[str] = mapped_column(String(200))  # casefolded, NFKC-normalised
    added_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditLogEntry(Base):
    """One moderator action."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_team_id_id", "team_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id", ondelete="CASCADE"))
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    action: Mapped[str] = mapped_column(String(32))
    target: Mapped[str] = mapped_column(String(200), default="")
    details: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    actor: Mapped[User | None] = relationship(lazy="joined")


class ChatMessage(Base):
    """A message the bot posted: lets a later reaction or button find its job and image."""

    __tablename__ = "chat_messages"
    __table_args__ = (UniqueConstraint("platform", "channel_id", "message_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    platform: Mapped[str] = mapped_column(String(16))
    channel_id: Mapped[str] = mapped_column(String(64))
    message_id: Mapped[str] = mapped_column(String(64))
    generation_id: Mapped[int] = mapped_column(ForeignKey("generations.id", ondelete="CASCADE"), index=True)
    image_index: Mapped[int | None] = mapped_column(Integer)  # None: the whole grid
    role: Mapped[str] = mapped_column(String(16), default="result")  # an engine.domain MessageRole
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ProcessedEvent(Base):
    """A platform event already handled (Slack retries events): dedup across bot replicas."""

    __tablename__ = "processed_events"
    __table_args__ = (UniqueConstraint("platform", "event_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    platform: Mapped[str] = mapped_column(String(16))
    event_id: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
