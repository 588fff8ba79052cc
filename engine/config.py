"""Configuration: one pydantic-settings class per concern, each with its own env prefix.

The defaults are the embedded setup: a SQLite file and a SQLite-backed Celery broker in the data
folder, images on the local disk, the built-in model. PostgreSQL, Redis and RabbitMQ are chosen
by URL. Nothing is read at import time: `get_settings()` builds (and caches) everything.
Every variable is documented in deploy/env.example.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _env(prefix: str) -> SettingsConfigDict:
    # An empty variable means "the default" (env files often carry NAME= lines).
    return SettingsConfigDict(env_prefix=prefix, env_file=None, extra="ignore", env_ignore_empty=True)


class PathSettings(BaseSettings):
    model_config = _env("IMAGINE_")

    data_dir: Path = Path("data")


class DatabaseSettings(BaseSettings):
    """IMAGINE_DB_URL picks the database; either the async or the sync driver name works."""

    model_config = _env("IMAGINE_DB_")

    url: str = ""  # empty: SQLite file in the data folder
    # Per bot process. PostgreSQL's max_connections (100 by default) must cover every bot's
    # pool_size + max_overflow plus 6 per worker process (docs/deploy.md, "Connections").
    pool_size: int = 5
    max_overflow: int = 5
    echo: bool = False
    # Upgrade the schema at start-up. On by default for SQLite (the embedded demo); production runs
    # the one-shot `imagine-bot migrate` job instead.
    auto_migrate: bool | None = None


class BrokerSettings(BaseSettings):
    """The Celery broker; wake-ups go over Redis pub/sub when a Redis URL is known."""

    model_config = _env("IMAGINE_BROKER_")

    url: str = ""  # empty: kombu's SQLAlchemy transport on a SQLite file (no server)
    notify_url: str = ""  # empty: the broker URL if it is Redis, else poll the database
    poll_interval_s: float = 0.2
    # Seconds a published task may wait for a reachable broker before the user is told it is down.
    publish_timeout_s: float = 3.0
    heartbeat_s: int = 60


class StorageSettings(BaseSettings):
    model_config = _env("IMAGINE_STORAGE_")

    images_dir: Path | None = None  # default: <data_dir>/images


#: The largest batch a worker may render at once (64 UNet rows with classifier-free guidance, the
#: largest CUDA-graph bucket in engine/render/speedups.py).
MAX_BATCH_IMAGES = 32


class RenderSettings(BaseSettings):
    """What the worker renders with. `model` is a local folder or a cached Hugging Face id."""

    model_config = _env("IMAGINE_RENDER_")

    model: str = "builtin"
    # Kandinsky 2.2 only: the prior folder or cached id (default: kandinsky-community's prior).
    prior_model: str = ""
    # Kandinsky 2.2 only: an inpainting decoder folder or cached id (KandinskyV22InpaintPipeline,
    # e.g. kandinsky-community/kandinsky-2-2-decoder-inpaint). Edits, zoom-outs and pans then use
    # it; without it they are drawn by masked sampling on the plain decoder.
    inpaint_model: str = ""
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto | float32 | float16 | bfloat16
    torch_threads: int = 0  # 0: torch's default
    # Speed-ups beyond a plain diffusers call (engine/render/speedups.py; docs/operating.md).
    # compile: off | regional (torch.compile of each repeated block; 1/true mean regional, as
    # the single on/off flag this replaced did). cuda_graphs: CUDA graphs for the fixed-shape
    # networks, batches padded to fixed sizes (CUDA only). Compiled kernels are kept in
    # compile_cache_dir (default <data_dir>/compile-cache) across worker restarts.
    compile: str = "off"
    cuda_graphs: bool = False
    channels_last: bool = False
    fuse_qkv: bool = False
    compile_cache_dir: Path | None = None
    cpu_offload: bool = False
    # Dynamic batching: a worker renders compatible queued jobs together, up to this many images,
    # waiting up to batch_wait_ms for more to arrive (0: batch only what is already queued).
    # 16 and 32 fill a large GPU better; the card's memory must hold them (ImagineGpuOutOfMemory).
    max_batch_images: int = 8
    batch_wait_ms: int = 0
    # A no-op renderer exists only for benchmarks that measure the system without the model.
    backend: str = "unclip"  # unclip | noop
    # The no-op renderer's time per job, "MS" or "MIN-MAX" (the chaos benchmark's slow renders).
    noop_delay_ms: str = ""

    @field_validator("compile", mode="before")
    @classmethod
    def _compile_mode(cls, value: object) -> str:
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on", "regional"):
            return "regional"
        if text in ("0", "false", "no", "off", "none"):
            return "off"
        raise ValueError(f"IMAGINE_RENDER_COMPILE must be off or regional (1/true also mean regional), not {value!r}")

    @field_validator("max_batch_images")
    @classmethod
    def _batch_size(cls, value: int) -> int:
        if not 1 <= value <= MAX_BATCH_IMAGES:
            raise ValueError(f"IMAGINE_RENDER_MAX_BATCH_IMAGES must be 1 to {MAX_BATCH_IMAGES}, not {value}")
        return value


class WorkerSettings(BaseSettings):
    model_config = _env("IMAGINE_WORKER_")

    # Run a Celery worker inside the console process (solo pool in a thread): the embedded demo.
    embedded: bool | None = None  # None: on when the broker is the embedded one
    soft_time_limit_s: int = 600
    time_limit_s: int = 660
    concurrency: int = 1
    # A rendering worker renews its jobs' lease every heartbeat_s; a running job whose lease is
    # older than lease_s has lost its worker (SIGKILL, OOM, a lost machine) and every worker's
    # sweeper (every sweep_interval_s) puts it back on the queue.
    heartbeat_s: float = 5.0
    lease_s: float = 20.0
    sweep_interval_s: float = 5.0
    # A queued job whose message is in no broker queue (the queue is empty) for this long is
    # published again: a message lost with a killed worker or a restarted broker.
    republish_after_s: float = 30.0
    # A job whose worker died this many times while rendering it is failed (and refunded).
    max_attempts: int = 3


class QuotaSettings(BaseSettings):
    model_config = _env("IMAGINE_QUOTA_")

    # Images per UTC day for teams that set no default of their own.
    default_daily_images: int = 200


class LimitSettings(BaseSettings):
    """Bounds on what one request may ask for; checked in the domain, shown in usage errors."""

    model_config = _env("IMAGINE_LIMIT_")

    max_prompt_chars: int = 1000
    max_steps: int = 100
    max_guidance: float = 30.0
    history_page_size: int = 10


class OpsSettings(BaseSettings):
    """Metrics, health checks and logs of every process (bots and workers)."""

    model_config = _env("IMAGINE_OPS_")

    # /metrics, /healthz and /readyz are served on this port (0 turns the endpoint off).
    host: str = "0.0.0.0"
    port: int = 9100
    log_format: str = "text"  # text | json
    log_level: str = "INFO"


class GallerySettings(BaseSettings):
    """The team gallery web page (`imagine-bot gallery`)."""

    model_config = _env("IMAGINE_GALLERY_")

    host: str = "0.0.0.0"
    port: int = 8080
    # Signs gallery links; without one, no links can be made and the gallery refuses everyone.
    secret: str = ""
    # How members reach the gallery, e.g. https://imagine.example.com (links are built on it).
    base_url: str = "http://localhost:8080"
    link_ttl_hours: int = 24 * 7


class RetentionSettings(BaseSettings):
    """How long images and jobs are kept (`imagine-bot retention`)."""

    model_config = _env("IMAGINE_RETENTION_")

    # Days to keep jobs and their images for teams that set no policy; 0 keeps everything.
    default_days: int = 0


class Settings:
    """All settings, grouped by concern."""

    def __init__(self) -> None:
        self.paths = PathSettings()
        self.database = DatabaseSettings()
        self.broker = BrokerSettings()
        self.storage = StorageSettings()
        self.render = RenderSettings()
        self.worker = WorkerSettings()
        self.quota = QuotaSettings()
        self.limits = LimitSettings()
        self.ops = OpsSettings()
        self.gallery = GallerySettings()
        self.retention = RetentionSettings()

    @property
    def data_dir(self) -> Path:
        return self.paths.data_dir

    @property
    def images_dir(self) -> Path:
        return self.storage.images_dir or self.data_dir / "images"

    @property
    def compile_cache_dir(self) -> Path:
        return self.render.compile_cache_dir or self.data_dir / "compile-cache"

    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite:///{self.data_dir / 'imagine.db'}"

    @property
    def broker_url(self) -> str:
        return self.broker.url or f"sqla+sqlite:///{self.data_dir / 'broker.db'}"

    @property
    def broker_is_embedded(self) -> bool:
        return self.broker_url.startswith(("sqla+", "sqlalchemy+", "filesystem:", "memory:"))

    @property
    def notify_url(self) -> str | None:
        if self.broker.notify_url:
            return self.broker.notify_url
        if self.broker_url.startswith(("redis://", "rediss://")):
            return self.broker_url
        return None

    @property
    def auto_migrate(self) -> bool:
        if self.database.auto_migrate is not None:
            return self.database.auto_migrate
        return self.database_url.startswith("sqlite")

    @property
    def embedded_worker(self) -> bool:
        if self.worker.embedded is not None:
            return self.worker.embedded
        return self.broker_is_embedded


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Build the settings from the environment once per process."""
    return Settings()
