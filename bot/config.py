"""One settings object, read from the environment and `.env`.

pydantic-settings does the reading and type checks; this module turns its errors into one
sentence per bad value, because a user who mistyped a variable should never see a traceback.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Annotated, Literal, TypeVar

from pydantic import BeforeValidator, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from bot import catalog


class ConfigError(Exception):
    """A missing or malformed setting. The message is one sentence naming the variable."""


_LIST_FORMS = 'must be ids separated by commas or spaces, or a JSON list such as ["C1", "C2"]'


def listed(v: object, forms: str) -> object:
    """The items of a list setting as people write it: one item, `a,b`, `a, b`, `a b`, or a JSON
    list, in the order written (a JSON list's items as JSON gave them). Anything not text is
    returned as it is; text that starts a JSON list but is not one raises ValueError(forms)."""
    if not isinstance(v, str):
        return v
    text = v.strip()
    if not text.startswith("["):
        return [x for x in re.split(r"[,\s]+", text) if x]
    try:
        return json.loads(text)
    except ValueError:
        raise ValueError(forms) from None


def comma_list(v: object) -> object:
    """A setting that lists ids, as people write them (see `listed`). An empty value is an empty
    list (the setting is off)."""
    v = listed(v, _LIST_FORMS)
    if isinstance(v, list | tuple | set | frozenset):
        # JSON numbers too: a Discord id pasted unquoted is still that id.
        if not all(isinstance(x, str | int) and not isinstance(x, bool) for x in v):
            raise ValueError(_LIST_FORMS)
        return frozenset(str(x).strip() for x in v if str(x).strip())
    return v


# The type of every list setting. NoDecode: pydantic-settings would otherwise read the value as
# JSON before any validator runs, so `a,b`, one id, or an empty value would end in SettingsError.
IdList = Annotated[frozenset[str], NoDecode, BeforeValidator(comma_list)]


def blank_as_none(value: object) -> object:
    """An empty `NAME=` line in .env means "not set", not "set to nothing"."""
    return None if isinstance(value, str) and not value.strip() else value


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "threadedit"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", populate_by_name=True
    )

    gemini_api_key: SecretStr | None = Field(default=None, alias="GEMINI_API_KEY")
    gemini_base_url: str = Field(
        default="https://generativelanguage.googleapis.com", alias="GEMINI_BASE_URL"
    )
    gemini_timeout_seconds: float = Field(default=180.0, gt=0, alias="GEMINI_TIMEOUT_SECONDS")
    gemini_retry_budget_seconds: float = Field(
        default=300.0, ge=0, alias="GEMINI_RETRY_BUDGET_SECONDS"
    )
    model: str = Field(default=catalog.FLASH, alias="THREADEDIT_MODEL")
    data_dir: Path = Field(default_factory=_default_data_dir, alias="THREADEDIT_DATA_DIR")
    engine: Literal["gemini", "local"] | None = Field(default=None, alias="THREADEDIT_ENGINE")
    aspect_ratio: str | None = Field(default=None, alias="THREADEDIT_ASPECT_RATIO")
    image_size: str | None = Field(default="1K", alias="THREADEDIT_IMAGE_SIZE")
    # Model calls at once across every process on one store (Gemini's quota is per project).
    max_concurrency: int = Field(default=4, ge=1, le=256, alias="THREADEDIT_MAX_CONCURRENCY")
    # Bounded context (bot/context.py): past either budget a request is re-anchored on the head
    # image. The token budget is also held to half the model's input limit; the byte budget may
    # not pass 20 MB, the most a request carries (research section 4).
    context_max_tokens: int = Field(default=32_000, ge=2_000, le=1_000_000,
                                    alias="THREADEDIT_CONTEXT_MAX_TOKENS")
    context_max_mb: float = Field(default=18.0, ge=1.0, le=20.0, alias="THREADEDIT_CONTEXT_MAX_MB")
    # Ask Gemini's countTokens before sending a request whose estimate is past half the budget.
    gemini_count_tokens: bool = Field(default=False, alias="GEMINI_COUNT_TOKENS")
    # Send reference images through the Files API (uploaded once, reused for up to 48 hours).
    gemini_files_api: bool = Field(default=False, alias="GEMINI_FILES_API")
    # Spend limits (0 turns a limit off): turns one user may ask for per hour in a workspace,
    # and USD a workspace may spend per UTC day, priced from catalog.py's table.
    user_turns_per_hour: int = Field(default=30, ge=0, alias="THREADEDIT_USER_TURNS_PER_HOUR")
    daily_budget_usd: float = Field(default=20.0, ge=0, alias="THREADEDIT_DAILY_BUDGET_USD")
    # A turn taken from the queue (one a crash left unfinished is taken again once its worker is
    # seen gone, or its lease ran out) is run when younger than this; an older one is reported
    # failed in its thread (a stale image is worse than a clear note).
    resume_max_age_seconds: float = Field(
        default=3600.0, ge=0, alias="THREADEDIT_RESUME_MAX_AGE_SECONDS")
    # The turn queue (bot/leases.py): a worker holds each turn it runs for this long, renewing
    # every third of it; a worker that dies loses its turns to the others after at most this.
    lease_seconds: float = Field(default=30.0, ge=3, le=3600, alias="THREADEDIT_LEASE_SECONDS")
    # `threadedit worker` only: the CPU priority it lowers itself to (Unix niceness; 0 leaves it).
    # An ingress on the same machine answers within Slack's 3 s and its first line is awaited;
    # a worker's turn waits 10-30 s on the model, so its milliseconds can wait instead.
    worker_niceness: int = Field(default=10, ge=0, le=19, alias="THREADEDIT_WORKER_NICENESS")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", alias="THREADEDIT_LOG_LEVEL"
    )
    # Set when the playground is reachable from elsewhere (behind a proxy): it then serves only
    # signed, expiring gallery links, and the chat adapters post such links in threads.
    public_url: str | None = Field(default=None, alias="THREADEDIT_PUBLIC_URL")
    link_secret: SecretStr | None = Field(default=None, alias="THREADEDIT_LINK_SECRET")
    # Capped at a year: a link that outlives that is, in practice, one that never expires.
    link_ttl_hours: float = Field(default=168.0, gt=0, le=8760, alias="THREADEDIT_LINK_TTL_HOURS")
    # More Host names the playground answers to, besides this machine's own (against DNS rebinding).
    # NoDecode: the validator reads the text as written, instead of pydantic-settings' JSON first.
    allowed_hosts: IdList = Field(default=frozenset(), alias="THREADEDIT_ALLOWED_HOSTS")
    # Where the store is (an SQLAlchemy URL): blank means the SQLite file in the data directory
    # (sqlite+aiosqlite:///<data dir>/threadedit.sqlite3); postgresql+psycopg://user:password@
    # host:5432/database shares one store between processes and machines. Never shown in errors.
    database_url: str = Field(default="", alias="THREADEDIT_DATABASE_URL")
    # Where images are: blank means the data directory's blobs/ folder; a folder path; or
    # s3://bucket/prefix on any S3-compatible service (bot/storage/s3.py), reached with the
    # standard AWS_* variables below, with a local cache (THREADEDIT_BLOB_CACHE, default the data
    # directory's blobs/) of every image this machine wrote or read.
    blob_store: str = Field(default="", alias="THREADEDIT_BLOB_STORE")
    blob_cache: Path | None = Field(default=None, alias="THREADEDIT_BLOB_CACHE")
    aws_access_key_id: SecretStr | None = Field(default=None, alias="AWS_ACCESS_KEY_ID")
    aws_secret_access_key: SecretStr | None = Field(default=None, alias="AWS_SECRET_ACCESS_KEY")
    aws_region: str | None = Field(default=None, alias="AWS_REGION")
    aws_endpoint_url: str | None = Field(default=None, alias="AWS_ENDPOINT_URL")

    @field_validator("engine", "aspect_ratio", "gemini_api_key", mode="before")
    @classmethod
    def _blank_is_unset(cls, v: object) -> object:
        return blank_as_none(v)

    @field_validator("public_url", "link_secret", mode="before")
    @classmethod
    def _blank_link_setting_is_unset(cls, v: object) -> object:
        return blank_as_none(v)

    @field_validator("public_url", mode="after")
    @classmethod
    def _check_public_url(cls, v: str | None) -> str | None:
        if v is None:
            return None
        v = v.strip().rstrip("/")
        if not v.startswith(("https://", "http://")) or "?" in v or "#" in v:
            raise ValueError("must be the http(s) address people open, such as https://edit.example.com")
        return v

    @field_validator("blob_cache", "aws_access_key_id", "aws_secret_access_key", "aws_region",
                     "aws_endpoint_url", mode="before")
    @classmethod
    def _blank_blob_setting_is_unset(cls, v: object) -> object:
        return blank_as_none(v)

    @field_validator("blob_store", mode="after")
    @classmethod
    def _check_blob_store(cls, v: str) -> str:
        v = v.strip()
        if "://" in v:
            from bot.storage.s3 import parse_s3_url

            parse_s3_url(v)  # ValueError: "must be a folder or s3://bucket/prefix"
        return v

    @field_validator("aws_endpoint_url", mode="after")
    @classmethod
    def _check_endpoint(cls, v: str | None) -> str | None:
        if v is None:
            return None
        v = v.strip().rstrip("/")
        if not v.startswith(("https://", "http://")) or "?" in v or "#" in v:
            raise ValueError("must be the S3 endpoint's address, such as https://s3.example.com or "
                             "http://127.0.0.1:9000")
        return v

    @field_validator("data_dir", mode="before")
    @classmethod
    def _blank_dir_is_default(cls, v: object) -> object:
        return _default_data_dir() if isinstance(v, str) and not v.strip() else v

    @field_validator("database_url", mode="after")
    @classmethod
    def _check_database_url(cls, v: str) -> str:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        if not v.strip():
            return ""
        try:
            driver = make_url(v.strip()).drivername
        except (ArgumentError, ValueError):
            driver = ""
        if driver not in ("sqlite+aiosqlite", "postgresql+psycopg"):
            raise ValueError("must be sqlite+aiosqlite:///path/to/file.sqlite3 or "
                             "postgresql+psycopg://user:password@host:5432/database")
        return v.strip()

    @model_validator(mode="after")
    def _default_database_is_the_data_dirs(self) -> Settings:
        if not self.database_url:
            from bot.storage.engine import sqlite_url

            self.database_url = sqlite_url(self.db_path)
        return self

    @field_validator("model", mode="after")
    @classmethod
    def _resolve_alias(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must name a model id or one of the aliases flash, pro")
        try:
            return catalog.check_model(v)
        except catalog.ModelRetired as exc:
            raise ValueError(exc.instead) from None
        except catalog.SettingRejected:
            raise ValueError(f"must be flash, pro or a Gemini image model id such as {catalog.PRO}") from None

    @field_validator("gemini_base_url", mode="after")
    @classmethod
    def _check_url(cls, v: str) -> str:
        v = v.strip().rstrip("/")
        if not v.startswith(("https://", "http://")):
            raise ValueError("must be an http(s) URL such as https://generativelanguage.googleapis.com")
        return v

    @property
    def engine_name(self) -> Literal["gemini", "local"]:
        if self.engine:
            return self.engine
        return "gemini" if self.gemini_api_key else "local"

    @property
    def engine_notice(self) -> str | None:
        """The one line said at start when the engine was chosen for the user."""
        if self.engine is None and self.gemini_api_key is None:
            return (
                "No GEMINI_API_KEY is set, so threadedit uses the offline local engine "
                "(a Pillow stand-in for trying the workflow, not AI)."
            )
        return None

    def require_engine_ready(self) -> None:
        if self.engine_name == "gemini" and self.gemini_api_key is None:
            raise ConfigError(
                "THREADEDIT_ENGINE is gemini but GEMINI_API_KEY is not set; "
                "set the key (in the environment or .env) or use THREADEDIT_ENGINE=local."
            )

    @property
    def db_path(self) -> Path:
        return self.data_dir / "threadedit.sqlite3"

    @property
    def blob_dir(self) -> Path:
        """The local folder of images: the store itself, or the S3 store's cache."""
        if self.blob_is_s3:
            return self.blob_cache or self.data_dir / "blobs"
        return Path(self.blob_store).expanduser() if self.blob_store else self.data_dir / "blobs"

    @property
    def blob_is_s3(self) -> bool:
        return self.blob_store.startswith("s3://")


# Settings whose value is never repeated in an error (a database URL may hold a password).
_SECRET_WORDS = ("key", "secret", "token", "password", "database_url")
S = TypeVar("S", bound=BaseSettings)


def load_settings(**overrides: object) -> Settings:
    """Read settings; raise ConfigError with one sentence for the first bad value."""
    settings = load_settings_of(Settings, **overrides)
    try:
        settings.aspect_ratio = catalog.check_aspect(settings.model, settings.aspect_ratio)
    except catalog.SettingRejected as exc:
        raise ConfigError(f"THREADEDIT_ASPECT_RATIO: {exc}") from None
    try:
        settings.image_size = catalog.check_size(settings.model, settings.image_size)
    except catalog.SettingRejected as exc:
        raise ConfigError(f"THREADEDIT_IMAGE_SIZE: {exc}") from None
    return settings


def load_settings_of(cls: type[S], **overrides: object) -> S:
    """Read any settings class (the core's, an adapter's) the same way: one sentence for the
    first bad value, which is shown unless the setting holds a secret."""
    try:
        settings = cls(**overrides)
    except SettingsError as exc:  # a value pydantic-settings could not even read
        found = re.search(r'field "(\w+)"', str(exc))
        field = found.group(1) if found else ""
        name = {n: f.alias or n.upper() for n, f in cls.model_fields.items()}.get(field, "A setting")
        raise ConfigError(f"{name} could not be read; check its value in the environment or .env.") \
            from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Cannot read the settings file .env in {Path.cwd()}: {_reason(exc)}.") \
            from None
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err["loc"] else "setting"
        names = {n: f.alias or n.upper() for n, f in cls.model_fields.items()}
        name = names.get(field, field)
        value = err.get("input")
        secret = any(word in name.lower() for word in _SECRET_WORDS)
        shown = "" if secret or isinstance(value, dict) else f" (got {value!r})"
        msg = err["msg"].removeprefix("Value error, ").replace("Input should be", "must be")
        msg = msg.replace("a valid integer, unable to parse string as an integer", "a whole number")
        raise ConfigError(f"{name} {msg}{shown}.".replace("..", ".")) from None
    return settings


def _reason(exc: Exception) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return "it is not UTF-8 text"
    return str(getattr(exc, "strerror", None) or exc)
