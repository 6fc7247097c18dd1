"""Discord settings, read from the environment and .env like the core's."""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator, Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bot.config import IdList, blank_as_none, listed
from bot.ids import is_number

DISCORD_API = "https://discord.com/api/v10"
_SHARD_FORMS = "must be shard numbers separated by commas or spaces, or a JSON list such as [0, 1]"


def shard_list(v: object) -> object:
    """Shard ids as people write them (bot.config.listed), in order and with any repeat kept, so
    that a repeat can be refused rather than silently merged."""
    v = listed(v, _SHARD_FORMS)
    if not isinstance(v, list | tuple):
        raise ValueError(_SHARD_FORMS)
    ids = []
    for x in v:
        # ASCII digits only: str.isdigit() also takes "²", which int() then refuses.
        if isinstance(x, bool) or not isinstance(x, int | str) or not is_number(str(x).strip()):
            raise ValueError(_SHARD_FORMS)
        ids.append(int(x))
    return tuple(ids)


# Like bot.config.IdList, but whole numbers in the order written (discord.py wants a list of ints).
ShardIds = Annotated[tuple[int, ...], NoDecode, BeforeValidator(shard_list)]


class DiscordSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    token: SecretStr | None = Field(default=None, alias="DISCORD_TOKEN")
    api_base: str = Field(default=DISCORD_API, alias="DISCORD_API_BASE")
    # A role name or id; members with it may approve. Unset: anyone may.
    approver_role: str | None = Field(default=None, alias="DISCORD_APPROVER_ROLE")
    # A role name or id whose members may change a session's model, aspect and size. Unset: anyone.
    settings_role: str | None = Field(default=None, alias="DISCORD_SETTINGS_ROLE")
    # One id, ids separated by commas or spaces, or a JSON list (bot.config.IdList).
    allowed_channels: IdList = Field(default=frozenset(), alias="DISCORD_ALLOWED_CHANNELS")
    # The privileged intent that lets the bot read replies that do not mention it. Turn off when
    # the Developer Portal switch is off, or Discord refuses the connection (close code 4014).
    message_content: bool = Field(default=True, alias="DISCORD_MESSAGE_CONTENT")
    # Sharding across processes: the total number of shards of the whole bot, and the ones this
    # process runs (all of them when only the count is set). Neither set: one connection, as
    # for any bot in fewer than 2,500 servers. Declared in this order: the ids are checked
    # against the count.
    shard_count: int | None = Field(default=None, ge=1, alias="DISCORD_SHARD_COUNT")
    shard_ids: ShardIds = Field(default=(), alias="DISCORD_SHARD_IDS")

    @field_validator("token", "approver_role", "settings_role", "shard_count", mode="before")
    @classmethod
    def _blank(cls, v: object) -> object:
        return blank_as_none(v)

    @field_validator("api_base", mode="after")
    @classmethod
    def _base(cls, v: str) -> str:
        v = v.strip().rstrip("/")
        if not v.startswith(("https://", "http://")):
            raise ValueError("must be an http(s) URL such as https://discord.com/api/v10")
        return v

    @field_validator("shard_ids", mode="after")
    @classmethod
    def _shards_within_count(cls, v: tuple[int, ...], info: ValidationInfo) -> tuple[int, ...]:
        if not v or "shard_count" not in info.data:  # nothing to check, or the count was refused
            return v
        count = info.data["shard_count"]
        if count is None:
            raise ValueError("needs DISCORD_SHARD_COUNT too, the number of shards across every process")
        if any(i >= count for i in v):
            raise ValueError(f"must be shard numbers from 0 to {count - 1}, since DISCORD_SHARD_COUNT "
                             f"is {count}")
        if len(set(v)) != len(v):
            raise ValueError("must name each shard once")
        return tuple(sorted(v))  # Discord wants shards identified in order (max_concurrency buckets)

    @property
    def sharded(self) -> bool:
        return self.shard_count is not None

    @property
    def runs_shard_zero(self) -> bool:
        """Whether this process holds shard 0, which Discord sends DMs and guild-less events to;
        the process that has it also registers the global slash commands (once for the fleet)."""
        return not self.shard_ids or 0 in self.shard_ids

    @property
    def shards_text(self) -> str:
        """The shards this process runs, for the line said at start; empty when not sharded."""
        if self.shard_count is None:
            return ""
        ids = self.shard_ids or tuple(range(self.shard_count))
        return f"shard{'s' if len(ids) > 1 else ''} {', '.join(map(str, ids))} of {self.shard_count}"

    @property
    def approver_roles(self) -> frozenset[str] | None:
        return frozenset({self.approver_role.strip()}) if self.approver_role else None

    @property
    def settings_roles(self) -> frozenset[str] | None:
        return frozenset({self.settings_role.strip()}) if self.settings_role else None
