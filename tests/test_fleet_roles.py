"""The fleet's roles as people start them: `threadedit run --no-worker` receives Slack's events,
records each turn and answers at once; `threadedit worker` takes the turn from the store's queue,
calls the model and posts the version through Slack's Web API. Real processes on one store."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from tests.processes import free_port, start_run, stop
from tests.slack_harness import eventually
from tests.test_slack_replicas import (
    Mention,
    Replica,
    _bot_posts,
    _deliver,
    _done,
    _envelope,
    _http_env,
    _one_turn_each,
)


async def test_an_ingress_records_and_answers_and_a_worker_runs_and_posts(tmp_path, slack, gemini, pg_url):
    env = _http_env(tmp_path, slack, gemini, pg_url)
    port = free_port()
    ingress, line = await start_run(tmp_path, {**env, "THREADEDIT_PORT": str(port)}, "run", "--no-worker")
    procs = [ingress]
    try:
        assert "no worker: `threadedit worker` processes run the turns" in line, line
        mention = Mention("1700000001.000100", "1700000001.000100", "a poster of a lighthouse")
        async with httpx.AsyncClient(timeout=30) as http:
            status, _ = await _deliver(http, Replica(ingress, port), _envelope(mention.event(), "EvONE"))
        assert status == 200
        # The ingress answers in the thread at once, and never calls the model.
        await eventually(lambda: _bot_posts(slack, mention.thread))
        assert _bot_posts(slack, mention.thread)[0]["text"].startswith("Working on v1")
        assert gemini.requests == []
        worker, line = await start_run(tmp_path, env, "worker")
        procs.append(worker)
        assert line.startswith("threadedit worker: taking turns of playground, slack"), line
        await eventually(lambda: _done(slack, mention.thread), within=60)
    finally:
        stopped = [await stop(p) for p in procs]
    for code, output in stopped:
        assert code == 0 and "Traceback" not in output, output
    await _one_turn_each(slack, gemini, pg_url, [mention])


def _niceness(pid: int) -> int:
    # /proc/PID/stat: the 19th field, counted after the command (which is in parentheses).
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[16])


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads niceness from /proc (Linux)")
async def test_a_worker_yields_the_cpu_to_the_ingress_as_far_as_its_setting_says(tmp_path, slack, gemini):
    """A worker lowers its CPU priority (THREADEDIT_WORKER_NICENESS, default 10) so that an ingress
    on the same machine answers a burst first; its threads, started after, inherit it."""
    env = _http_env(tmp_path, slack, gemini, None)
    for setting, expected in ((None, 10), ("3", 3), ("0", os.nice(0))):
        run_env = {**env, "THREADEDIT_WORKER_NICENESS": setting} if setting is not None else env
        worker, line = await start_run(tmp_path, run_env, "worker")
        try:
            assert line.rstrip().endswith(f"CPU niceness {expected}."), line
            threads = list(Path(f"/proc/{worker.pid}/task").iterdir())
            assert len(threads) > 1  # the store's thread among them
            assert {_niceness(int(t.name)) for t in threads} == {expected}
        finally:
            code, output = await stop(worker)
        assert code == 0 and "Traceback" not in output, output
    refused, line = await start_run(tmp_path, {**env, "THREADEDIT_WORKER_NICENESS": "20"}, "worker")
    assert await refused.wait() == 2 and "THREADEDIT_WORKER_NICENESS" in line, line
