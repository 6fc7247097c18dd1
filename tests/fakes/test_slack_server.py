"""Self-tests of the fake Slack server (tests/fakes/slack_server.py), driven with the real
slack_sdk AsyncWebClient (and once with a real slack_bolt AsyncApp)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient

from tests.fakes.slack_server import FakeSlack

TOKEN = "xoxb-test-token"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # AsyncWebClient picks up HTTP(S)_PROXY and ignores NO_PROXY: loopback must not go via a proxy.
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    yield


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(TOKEN) as server:
        yield server


@pytest.fixture
def client(fake: FakeSlack) -> AsyncWebClient:
    return AsyncWebClient(token=TOKEN, base_url=fake.api_url, timeout=5)


async def api_error(call: Any) -> str:
    with pytest.raises(SlackApiError) as info:
        await call
    return str(info.value.response["error"])


async def test_auth_test(fake: FakeSlack, client: AsyncWebClient) -> None:
    res = await client.auth_test()
    assert res["user_id"] == "UBOT" and res["team_id"] == "T1" and res["bot_id"]
    call = fake.calls[-1]
    assert call.method == "auth.test" and call.status == 200
    assert call.headers["authorization"] == f"Bearer {TOKEN}"


async def test_wrong_or_missing_token(fake: FakeSlack) -> None:
    bad = AsyncWebClient(token="xoxb-wrong", base_url=fake.api_url)
    assert await api_error(bad.auth_test()) == "invalid_auth"
    assert fake.calls[-1].status == 200  # Slack reports auth errors with HTTP 200
    async with httpx.AsyncClient() as http:
        res = await http.post(fake.api_url + "chat.postMessage", data={"channel": "C1", "text": "x"})
    assert res.status_code == 200 and res.json() == {"ok": False, "error": "not_authed"}


async def test_unknown_method(client: AsyncWebClient) -> None:
    assert await api_error(client.api_call("chat.nonsense")) == "unknown_method"


async def test_post_in_thread_then_replies(fake: FakeSlack, client: AsyncWebClient) -> None:
    parent = fake.add_message("C1", "make it blue", user="UALICE")
    res = await client.chat_postMessage(channel="C1", text="on it", thread_ts=parent["ts"])
    assert res["channel"] == "C1" and res["message"]["thread_ts"] == parent["ts"]
    assert float(res["ts"]) > float(parent["ts"])
    replies = await client.conversations_replies(channel="C1", ts=parent["ts"])
    texts = [(m["user"], m["text"]) for m in replies["messages"]]
    assert texts == [("UALICE", "make it blue"), ("UBOT", "on it")]
    assert replies["messages"][0]["reply_count"] == 1
    assert [m["text"] for m in fake.messages_in_thread("C1", parent["ts"])] == ["make it blue", "on it"]
    args = fake.calls[-1].args  # conversations.replies is a GET with a query string
    assert args["channel"] == "C1" and args["ts"] == parent["ts"]


async def test_timestamps_unique_and_increasing(client: AsyncWebClient) -> None:
    stamps = [(await client.chat_postMessage(channel="C1", text=str(i)))["ts"] for i in range(5)]
    assert stamps == sorted(stamps, key=float) and len(set(stamps)) == 5
    assert all(len(ts.split(".")[1]) == 6 for ts in stamps)


@pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing")
async def test_post_message_errors(fake: FakeSlack, client: AsyncWebClient) -> None:
    assert await api_error(client.chat_postMessage(channel="", text="hi")) == "channel_not_found"
    assert await api_error(client.chat_postMessage(channel="C1", text="")) == "no_text"
    no_type = client.chat_postMessage(channel="C1", text="x", blocks=[{"text": "x"}])
    assert await api_error(no_type) == "invalid_blocks"
    not_json = client.chat_postMessage(channel="C1", text="x", blocks="{")
    assert await api_error(not_json) == "invalid_blocks_format"
    assert await api_error(client.conversations_replies(channel="C1", ts="1.000001")) == "thread_not_found"
    assert fake.messages == {}


async def test_chat_update_edits(fake: FakeSlack, client: AsyncWebClient) -> None:
    posted = await client.chat_postMessage(channel="C1", text="working…")
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "done"}}]
    res = await client.chat_update(channel="C1", ts=posted["ts"], text="done", blocks=blocks)
    assert res["ts"] == posted["ts"] and res["message"]["text"] == "done"
    [msg] = fake.messages["C1"]
    assert msg["text"] == "done" and msg["blocks"] == blocks and msg["edited"]["user"] == "UBOT"
    assert await api_error(client.chat_update(channel="C1", ts="1.000002", text="x")) == "message_not_found"
    user_msg = fake.add_message("C1", "mine")
    assert await api_error(client.chat_update(channel="C1", ts=user_msg["ts"], text="x")) == (
        "cant_update_message")


async def test_files_upload_v2_into_thread(fake: FakeSlack, client: AsyncWebClient) -> None:
    parent = fake.add_message("C1", "edit this")
    res = await client.files_upload_v2(channel="C1", thread_ts=parent["ts"], content=PNG,
                                       filename="result.png", title="Result", initial_comment="here")
    fid = res["file"]["id"]
    assert [c.method for c in fake.calls] == ["files.getUploadURLExternal", "files.completeUploadExternal"]
    up = fake.uploads[fid]
    assert up.content == PNG and up.filename == "result.png" and up.title == "Result" and up.completed
    assert (up.channel, up.thread_ts, up.initial_comment) == ("C1", parent["ts"], "here")
    assert res["file"]["shares"] == {}  # as on Slack, sharing completes after the response
    reply = fake.messages_in_thread("C1", parent["ts"])[-1]
    assert reply["files"][0]["id"] == fid and reply["text"] == "here" and reply["user"] == "UBOT"
    info = await client.files_info(file=fid)
    assert info["file"]["shares"]["public"]["C1"][0]["ts"] == reply["ts"]
    assert info["file"]["mimetype"] == "image/png" and info["file"]["size"] == len(PNG)
    complete = fake.calls[1].args
    assert json.loads(complete["files"]) == [{"id": fid, "title": "Result"}]
    async with httpx.AsyncClient() as http:  # the uploaded bytes are served at url_private
        got = await http.get(info["file"]["url_private"], headers={"Authorization": f"Bearer {TOKEN}"})
    assert got.content == PNG


async def test_files_upload_v2_with_blocks_needs_json_string(fake: FakeSlack, client: AsyncWebClient) -> None:
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*done*"}}]
    res = await client.files_upload_v2(channel="C1", content=b"abc", filename="a.txt",
                                       blocks=json.dumps(blocks))
    assert fake.uploads[res["file"]["id"]].blocks == blocks
    assert fake.messages["C1"][0]["blocks"] == blocks
    with pytest.raises(TypeError):  # a list goes into the query string as-is and aiohttp refuses it
        await client.files_upload_v2(channel="C1", content=b"abc", filename="a.txt", blocks=blocks)


async def test_upload_length_must_match(fake: FakeSlack, client: AsyncWebClient) -> None:
    url = await client.files_getUploadURLExternal(filename="x.png", length=10)
    async with httpx.AsyncClient() as http:
        short = await http.post(url["upload_url"], content=b"12345")
        multipart = await http.post(url["upload_url"], files={"file": ("x.png", b"0123456789")})
    assert short.status_code == 400
    assert multipart.status_code == 200 and multipart.text == "OK - 10"
    assert fake.uploads[url["file_id"]].content == b"0123456789"
    assert await api_error(client.files_completeUploadExternal(files=[{"id": "FNOPE"}])) == "file_not_found"


async def test_image_blocks(fake: FakeSlack, client: AsyncWebClient) -> None:
    shared = fake.add_file(PNG)
    ok = [{"type": "image", "slack_file": {"id": shared["id"]}, "alt_text": "result"}]
    res = await client.chat_postMessage(channel="C1", text="result", blocks=ok)
    assert res["message"]["blocks"] == ok
    for bad in (
        {"type": "image", "alt_text": "result"},  # neither image_url nor slack_file
        {"type": "image", "image_url": "https://x/y.png", "slack_file": {"id": shared["id"]},
         "alt_text": "r"},  # both
        {"type": "image", "slack_file": {"id": shared["id"]}},  # no alt_text
        {"type": "image", "slack_file": {"id": "FUNKNOWN"}, "alt_text": "r"},
    ):
        with pytest.raises(SlackApiError) as info:
            await client.chat_postMessage(channel="C1", text="x", blocks=[bad])
        assert info.value.response["error"] == "invalid_blocks" and info.value.response["errors"]
    assert len(fake.messages["C1"]) == 1


async def test_rate_limit_retried(fake: FakeSlack) -> None:
    client = AsyncWebClient(token=TOKEN, base_url=fake.api_url,
                            retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=1)])
    fake.rate_limit_next["chat.postMessage"] = 0
    res = await client.chat_postMessage(channel="C1", text="hello")
    assert res["ok"] and [c.status for c in fake.calls] == [429, 200]
    assert fake.calls[0].method == "chat.postMessage" and len(fake.messages["C1"]) == 1
    fake.rate_limit_next["auth.test"] = 2
    plain = AsyncWebClient(token=TOKEN, base_url=fake.api_url, retry_handlers=[])
    with pytest.raises(SlackApiError) as info:
        await plain.auth_test()
    assert info.value.response.status_code == 429 and info.value.response["error"] == "ratelimited"
    assert info.value.response.headers["Retry-After"] == "2"
    assert (await plain.auth_test())["ok"]  # only once


async def test_ephemeral_reactions_users(fake: FakeSlack, client: AsyncWebClient) -> None:
    res = await client.chat_postEphemeral(channel="C1", user="UALICE", text="only you", thread_ts="1.000001")
    assert fake.ephemerals == [{"channel": "C1", "user": "UALICE", "text": "only you", "blocks": None,
                                "thread_ts": "1.000001", "message_ts": res["message_ts"]}]
    await client.reactions_add(channel="C1", timestamp="1.000001", name="eyes")
    assert await api_error(client.reactions_add(channel="C1", timestamp="1.000001", name="eyes")) == (
        "already_reacted")
    await client.reactions_remove(channel="C1", timestamp="1.000001", name="eyes")
    assert [r["action"] for r in fake.reactions] == ["add", "remove"]
    fake.users["UALICE"] = {"real_name": "Alice"}
    user = (await client.users_info(user="UALICE"))["user"]
    assert user["real_name"] == "Alice" and user["name"]


async def test_file_origin_needs_the_token(fake: FakeSlack, client: AsyncWebClient) -> None:
    shared = fake.add_file(PNG, filename="ref.png")
    assert shared["url_private"].startswith(fake.files_origin + "/files-pri/T1-")
    assert (await client.files_info(file=shared["id"]))["file"]["name"] == "ref.png"
    hidden = fake.add_file(PNG, filename="scope.png", login_page=True)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient() as http:
        with_token = await http.get(shared["url_private"], headers=auth)
        download = await http.get(shared["url_private_download"], headers=auth)
        without = await http.get(shared["url_private"])
        login = await http.get(hidden["url_private"], headers=auth)
    assert with_token.content == PNG and download.content == PNG
    assert with_token.headers["content-type"] == "image/png"
    for page in (without, login):
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert page.text.startswith("<!DOCTYPE html>") and "Sign in to Slack" in page.text
    assert [d.authorization for d in fake.file_downloads] == [auth["Authorization"]] * 2 + [None] + [
        auth["Authorization"]]


async def test_bolt_app_replies_in_thread(fake: FakeSlack, client: AsyncWebClient) -> None:
    app = AsyncApp(client=client, process_before_response=True, request_verification_enabled=False)
    done = asyncio.Event()

    @app.message("hello")
    async def on_hello(message: dict[str, Any], say: Any) -> None:
        await say(text="hi!", thread_ts=message["ts"])
        done.set()

    parent = fake.add_message("C1", "hello bot", user="UALICE")
    event = {"type": "message", "channel": "C1", "user": "UALICE", "text": "hello bot", "ts": parent["ts"]}
    body = {"type": "event_callback", "team_id": "T1", "api_app_id": "A1", "event_id": "Ev1", "event": event}
    res = await app.async_dispatch(AsyncBoltRequest(body=body, mode="socket_mode"))
    assert res.status == 200
    await asyncio.wait_for(done.wait(), 5)
    assert [c.method for c in fake.calls] == ["auth.test", "chat.postMessage"]
    assert fake.messages_in_thread("C1", parent["ts"])[-1]["text"] == "hi!"
