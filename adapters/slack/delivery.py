"""Posting to Slack from a process that receives nothing: how a worker delivers turns.

Only the Web API with the bot token: no Socket Mode connection (Slack allows an app 10 of them)
and no HTTP listener, so any number of workers can post for one app, and the app token and the
signing secret stay with the processes that receive events. Posts go through the same core and
backend as the adapter's (adapters/slack/app.py), so they look the same and are recorded the same.
"""

from __future__ import annotations

from adapters.backoff import Report, report
from adapters.slack.app import slack_core, web_client
from adapters.slack.backend import SlackBackend
from adapters.slack.settings import SlackSettings
from adapters.slack.startup import SlackStartError, check_bot_token, check_token_kinds
from bot.app import App


class SlackDelivery:
    def __init__(self, settings: SlackSettings, app: App, *, progress_interval: float = 5.0,
                 say: Report | None = None) -> None:
        if settings.bot_token is None:
            raise SlackStartError("SLACK_BOT_TOKEN is not set; a worker posts to Slack with the Bot User "
                                  "OAuth Token (xoxb-..., from the app's Install App page).")
        # Only the bot token is used here: an app token of the wrong kind is for `run` to refuse.
        check_token_kinds(settings.model_copy(update={"app_token": None}))
        self.settings = settings
        self._say = say
        self.backend = SlackBackend(web_client(settings))
        # The worker's own pipeline runs the turns; this core only posts them.
        self.core = slack_core(app, self.backend, settings, progress_interval=progress_interval,
                               work=False)

    async def start(self) -> str:
        """Check the bot token with Slack (auth.test). While Slack cannot be reached this retries
        with backoff, one line per retry; a refused token is a sentence. Cancelling it (a stop)
        ends it at once."""
        me = await check_bot_token(self.backend.client, self.settings.api_url, say=self._say or report)
        return f"Slack delivery (Web API only, as {me.get('user') or me.get('user_id') or 'the bot'})"

    async def aclose(self) -> None:
        # The Web API client opens a session per call: only the core's tasks are left to end.
        await self.core.aclose()
