"""Discord settings, read from the environment and .env like the core's."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.config import IdList, blank_as_none

DISCORD_API = "https://discord.com/api/v10"


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

    @field_validator("token", "approver_role", "settings_role", mode="before")
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

    @property
    def approver_roles(self) -> frozenset[str] | None:
        return frozenset({self.approver_role.strip()}) if self.approver_role else None

    @property
    def settings_roles(self) -> frozenset[str] | None:
        return frozenset({self.settings_role.strip()}) if self.settings_role else None
