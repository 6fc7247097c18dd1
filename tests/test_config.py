"""Settings from the environment and .env: defaults, aliases, and one sentence per bad value."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import ConfigError, load_settings

LIST_NAMES = ["SLACK_APPROVERS", "SLACK_ALLOWED_CHANNELS", "SLACK_SETTINGS_CHANGERS",
              "SLACK_FILE_ORIGINS", "DISCORD_ALLOWED_CHANNELS"]
ENV_NAMES = ["GEMINI_API_KEY", "GEMINI_BASE_URL", "THREADEDIT_ENGINE", "THREADEDIT_MODEL",
             "THREADEDIT_DATA_DIR", "THREADEDIT_IMAGE_SIZE", "THREADEDIT_ASPECT_RATIO",
             "THREADEDIT_MAX_CONCURRENCY", "XDG_DATA_HOME", *LIST_NAMES]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_defaults_choose_the_local_engine_and_say_so(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    s = load_settings()
    assert s.engine_name == "local" and "offline local engine" in (s.engine_notice or "")
    assert s.model == "gemini-3.1-flash-image" and s.image_size == "1K"
    assert s.data_dir == tmp_path / "xdg" / "threadedit"
    assert s.gemini_base_url == "https://generativelanguage.googleapis.com"


def test_dot_env_is_read_and_blank_values_mean_default(tmp_path) -> None:
    (tmp_path / ".env").write_text(
        "GEMINI_API_KEY=abc\nTHREADEDIT_MODEL=pro\nTHREADEDIT_DATA_DIR=\nTHREADEDIT_ENGINE=\n"
        "THREADEDIT_IMAGE_SIZE=2k\nGEMINI_BASE_URL=http://127.0.0.1:9999/\n")
    s = load_settings()
    assert s.engine_name == "gemini" and s.engine_notice is None
    assert s.model == "gemini-3-pro-image" and s.image_size == "2K"
    assert s.data_dir.name == "threadedit"
    assert s.gemini_base_url == "http://127.0.0.1:9999"
    assert "abc" not in repr(s)  # the key is a secret even in a repr


def test_unknown_model_ids_pass_through(monkeypatch) -> None:
    monkeypatch.setenv("THREADEDIT_MODEL", "gemini-9-ultra-image")
    assert load_settings().model == "gemini-9-ultra-image"


@pytest.mark.parametrize(
    ("name", "value", "needle"),
    [
        ("THREADEDIT_ENGINE", "dalle", "THREADEDIT_ENGINE"),
        ("THREADEDIT_MAX_CONCURRENCY", "0", "THREADEDIT_MAX_CONCURRENCY"),
        ("GEMINI_BASE_URL", "generativelanguage.googleapis.com", "GEMINI_BASE_URL"),
        ("THREADEDIT_IMAGE_SIZE", "3K", "does not take size 3K"),
        ("THREADEDIT_ASPECT_RATIO", "2:1", "does not take aspect ratio 2:1"),
        ("THREADEDIT_MODEL", "dall-e-3", "THREADEDIT_MODEL must be flash, pro or a Gemini image model id"),
    ],
)
def test_bad_values_are_one_sentence(monkeypatch, name, value, needle) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    text = str(err.value)
    assert needle in text and "\n" not in text and "pydantic" not in text.lower()


def test_gemini_engine_without_a_key_is_refused(monkeypatch) -> None:
    monkeypatch.setenv("THREADEDIT_ENGINE", "gemini")
    with pytest.raises(ConfigError, match="GEMINI_API_KEY is not set"):
        load_settings().require_engine_ready()


def test_env_example_lists_every_setting_of_every_part() -> None:
    from adapters.discord.settings import DiscordSettings
    from adapters.slack.settings import SlackSettings
    from bot.config import Settings

    example = Path(__file__).parent.parent / ".env.example"
    listed = {line.split("=")[0] for line in example.read_text().splitlines() if line[:1].isupper()}
    names = {f.alias for cls in (Settings, SlackSettings, DiscordSettings)
             for f in cls.model_fields.values()}
    assert names == listed


def test_the_allocator_is_tuned_on_glibc() -> None:
    import platform

    from bot.allocator import tune_allocator

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt is glibc's")
    assert tune_allocator() is True


def _list_setting(name: str) -> frozenset[str]:
    """Read one list setting through the settings class that owns it."""
    from adapters.discord.settings import DiscordSettings
    from adapters.slack.settings import SlackSettings
    from bot.config import load_settings_of

    for cls in (SlackSettings, DiscordSettings):
        for field, info in cls.model_fields.items():
            if info.alias == name:
                return getattr(load_settings_of(cls), field)
    raise AssertionError(name)


def _expected(name: str, ids: set[str]) -> frozenset[str]:
    if name == "SLACK_FILE_ORIGINS" and not ids:
        return frozenset({"https://files.slack.com"})  # empty means the default, as elsewhere
    return frozenset(ids)


LIST_FORMS = [
    ("U1", {"U1"}),
    ("U1,U2", {"U1", "U2"}),
    ("U1, U2", {"U1", "U2"}),
    ("U1 U2", {"U1", "U2"}),
    (" U1 ,\tU2 , ", {"U1", "U2"}),
    ('["U1","U2"]', {"U1", "U2"}),
    ('[ "U1", "U2" ]', {"U1", "U2"}),
    ("[1234567890123456789, 42]", {"1234567890123456789", "42"}),
    ("", set()),
    ("[]", set()),
]


@pytest.mark.parametrize("name", LIST_NAMES)
@pytest.mark.parametrize(("value", "expected"), LIST_FORMS)
def test_every_list_setting_takes_every_form_from_the_environment(monkeypatch, name, value, expected):
    monkeypatch.setenv(name, value)
    assert _list_setting(name) == _expected(name, expected)


@pytest.mark.parametrize("name", LIST_NAMES)
@pytest.mark.parametrize(("value", "expected"), LIST_FORMS)
def test_every_list_setting_takes_every_form_from_dot_env(tmp_path, name, value, expected):
    quoted = f"'{value}'" if '"' in value else value
    (tmp_path / ".env").write_text(f"{name}={quoted}\n")
    assert _list_setting(name) == _expected(name, expected)


def test_the_shipped_file_origins_default_is_read_from_env_example(tmp_path) -> None:
    import shutil

    shutil.copy(Path(__file__).parent.parent / ".env.example", tmp_path / ".env")
    assert _list_setting("SLACK_FILE_ORIGINS") == {"https://files.slack.com"}
    assert _list_setting("SLACK_APPROVERS") == frozenset()
    assert _list_setting("DISCORD_ALLOWED_CHANNELS") == frozenset()


def test_file_origins_lose_their_trailing_slash(monkeypatch) -> None:
    monkeypatch.setenv("SLACK_FILE_ORIGINS", "https://files.slack.com/, https://files-edu.slack.com")
    assert _list_setting("SLACK_FILE_ORIGINS") == {"https://files.slack.com", "https://files-edu.slack.com"}


@pytest.mark.parametrize("value", ['["U1", "U2"', '["U1", {"a": 1}]', "[true]", "[[1]]"])
def test_a_malformed_list_is_one_sentence_naming_it(monkeypatch, value) -> None:
    monkeypatch.setenv("SLACK_APPROVERS", value)
    with pytest.raises(ConfigError) as err:
        _list_setting("SLACK_APPROVERS")
    text = str(err.value)
    assert text.startswith("SLACK_APPROVERS must be ids separated by commas or spaces")
    assert "\n" not in text and "pydantic" not in text.lower()


def test_a_dot_env_that_is_not_text_is_one_sentence(tmp_path) -> None:
    (tmp_path / ".env").write_bytes(b"THREADEDIT_MODEL=\xff\xfe\n")
    with pytest.raises(ConfigError, match="Cannot read the settings file .env"):
        load_settings()


def test_a_value_pydantic_settings_cannot_read_is_one_sentence(monkeypatch) -> None:
    """A list field without IdList is JSON-decoded by pydantic-settings, which raises
    SettingsError for `a,b`: that too ends in one sentence naming the variable."""
    from pydantic import Field
    from pydantic_settings import BaseSettings

    from bot.config import load_settings_of

    class Raw(BaseSettings):
        ids: list[str] = Field(default=[], alias="RAW_IDS")

    monkeypatch.setenv("RAW_IDS", "a,b")
    with pytest.raises(ConfigError) as err:
        load_settings_of(Raw)
    assert str(err.value) == "RAW_IDS could not be read; check its value in the environment or .env."
