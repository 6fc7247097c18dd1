"""Slack settings, read from the environment and .env like the core's."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.config import IdList, blank_as_none

SLACK_FILE_SERVER = frozenset({"https://files.slack.com"})


class SlackSettings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    bot_token: SecretStr | None = Field(default=None, alias="SLACK_BOT_TOKEN")
    app_token: SecretStr | None = Field(default=None, alias="SLACK_APP_TOKEN")
    signing_secret: SecretStr | None = Field(default=None, alias="SLACK_SIGNING_SECRET")
    api_url: str = Field(default="https://slack.com/api/", alias="SLACK_API_URL")
    # Lists: one id, ids separated by commas or spaces, or a JSON list (bot.config.IdList).
    approvers: IdList = Field(default=frozenset(), alias="SLACK_APPROVERS")
    allowed_channels: IdList = Field(default=frozenset(), alias="SLACK_ALLOWED_CHANNELS")
    settings_changers: IdList = Field(default=frozenset(), alias="SLACK_SETTINGS_CHANGERS")
    file_origins: IdList = Field(
        default=SLACK_FILE_SERVER, alias="SLACK_FILE_ORIGINS")
    host: str = Field(default="127.0.0.1", alias="THREADEDIT_HOST")
    port: int = Field(default=3000, ge=1, le=65535, alias="THREADEDIT_PORT")

    @field_validator("file_origins", mode="after")
    @classmethod
    def _origins(cls, v: frozenset[str]) -> frozenset[str]:
        # Empty means the default, as for every other setting: an empty list would only make
        # every download fail.
        return frozenset(o.rstrip("/") for o in v) or SLACK_FILE_SERVER

    @field_validator("bot_token", "app_token", "signing_secret", mode="before")
    @classmethod
    def _blank(cls, v: object) -> object:
        return blank_as_none(v)

    @field_validator("api_url", mode="after")
    @classmethod
    def _slash(cls, v: str) -> str:
        return v if v.endswith("/") else v + "/"

    @property
    def configured(self) -> bool:
        return self.bot_token is not None and (self.app_token or self.signing_secret) is not None

    @property
    def mode(self) -> str:
        return "socket" if self.app_token else "http"
