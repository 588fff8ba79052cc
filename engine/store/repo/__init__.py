"""Repository functions: every query imagine-bot runs, each taking a sync Session.

The service calls these through `Database.run` (async bots); the worker calls them directly.
They never commit: the caller owns the transaction. One module per concern; callers use the
package (`from engine.store import repo`, `repo.get_generation(...)`).
"""

from engine.store.repo._deliveries import (
    ACTIVE_LIMIT,
    chat_messages_for,
    claim_deliveries,
    find_chat_message,
    mark_delivered,
    record_chat_message,
    release_delivery,
    renew_delivery,
)
from engine.store.repo._events import forget_events_before, remember_event
from engine.store.repo._generations import (
    find_image,
    get_generation,
    get_image,
    insert_generation,
    latest_generation,
    queue_position,
    team_generations,
    team_jobs_since,
    thread_members,
    user_generations,
)
from engine.store.repo._quota import (
    apply_role_reset,
    debit,
    find_policy,
    ledger,
    ledger_debit,
    lock_usage,
    policy_rules,
    quota_status,
    refund,
    try_debit,
)
from engine.store.repo._teams import (
    SubmitContext,
    audit_entries,
    blocked_terms,
    ensure_actor,
    ensure_team,
    ensure_user,
    find_ban,
    find_user,
    remove_blocked_term,
    submit_context,
)
from engine.store.repo._views import generation_view, image_view, message_ref, new_generation_view

__all__ = [
    "ACTIVE_LIMIT",
    "SubmitContext",
    "apply_role_reset",
    "audit_entries",
    "blocked_terms",
    "chat_messages_for",
    "claim_deliveries",
    "debit",
    "ensure_actor",
    "ensure_team",
    "ensure_user",
    "find_ban",
    "find_chat_message",
    "find_image",
    "find_policy",
    "find_user",
    "forget_events_before",
    "generation_view",
    "get_generation",
    "get_image",
    "image_view",
    "insert_generation",
    "latest_generation",
    "ledger",
    "ledger_debit",
    "lock_usage",
    "mark_delivered",
    "message_ref",
    "new_generation_view",
    "policy_rules",
    "queue_position",
    "quota_status",
    "record_chat_message",
    "refund",
    "release_delivery",
    "remember_event",
    "remove_blocked_term",
    "renew_delivery",
    "submit_context",
    "team_generations",
    "team_jobs_since",
    "thread_members",
    "try_debit",
    "user_generations",
]
