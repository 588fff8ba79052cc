"""Prometheus metrics, shared by bots and workers (each process serves its own /metrics).

Workers count what they render (jobs by outcome, failures by reason, images, batch fill,
queue wait and render time, GPU memory, readiness); bots count what users meet (quota
refusals, delivery lag) and report the queue depth they read from the database. Only
prometheus_client here: the core (engine.service) does not import this module.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

# Buckets in seconds from "instant" to "a long render on a busy queue".
_SECONDS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)

QUEUE_DEPTH = Gauge("imagine_queue_depth", "Jobs waiting to render, by queue", ["queue"])
JOBS = Counter("imagine_jobs_total", "Jobs that reached an end, by status", ["status"])
FAILURES = Counter("imagine_job_failures_total", "Jobs that failed, by reason", ["reason"])
JOB_SECONDS = Histogram("imagine_job_seconds", "Where a job's time goes", ["phase"], buckets=_SECONDS)
IMAGES = Counter("imagine_images_rendered_total", "Images rendered and stored")
QUOTA_REFUSALS = Counter("imagine_quota_refusals_total", "Requests refused for lack of quota")
BATCH_FILL = Histogram(
    "imagine_batch_fill",
    "Images per pipeline call over the batch size",
    buckets=(0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0),
)
GPU_MEMORY = Gauge("imagine_gpu_memory_bytes", "GPU memory held by this worker's tensors")
WORKER_READY = Gauge("imagine_worker_ready", "1 when this worker has its model loaded")


def failure_reason(message: str) -> str:
    """A low-cardinality label for a failure message (the message itself may name a job)."""
    text = (message or "").lower()
    for reason, words in (
        ("timeout", ("time limit",)),
        ("out_of_memory", ("out of memory",)),
        ("worker_lost", ("worker stopped",)),
        ("queue_unavailable", ("queue could not be reached",)),
        ("unsupported", ("has no", "cannot")),
        ("missing_source", ("missing", "no longer exists", "is gone")),
    ):
        if any(word in text for word in words):
            return reason
    return "render_error"
