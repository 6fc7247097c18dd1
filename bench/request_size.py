"""Benchmark 2: request bytes and estimated input tokens per turn, the bot's policy against full
replay, turns 1 to 60.

One session is taken through 60 edits on the real EditService (whatever context policy
`open_app` configures) against the zero-latency fake returning ~1 MB 2K JPEGs.
 Bounded (what was sent): measured by the fake on receipt: the request body's length in bytes,
 and its input tokens by the fake's own rule (`gemini_rules.count_tokens`: len(text)//4 per text
 part, a flat 1120 per image on 3.1 Flash Image, thought images included).
 Full replay (never sent): rebuilt afterwards for each turn k from what is stored, the way the
 service built requests before the bounded policy: every version from the root to k's parent,
 user turn and model answer, then k's own user turn, as `build_request` lays them out; its size
 is that of `json.dumps(body, separators=(",", ":"))` (ASCII, so characters = bytes, exactly
 what GeminiEngine sends), added up content by content (a 60-turn full replay is 160 MB of JSON
 with real-size signatures: too much to build 60 times), and its tokens by the same rule.
The model's limits are printed beside them: the input token limit of the model, and 20 MB
(20,000,000 bytes, the stricter reading of Gemini's limit on a request with inline data).
"""

from __future__ import annotations

import json
from typing import Any

from bench import charts, report
from bench.common import Run
from bench.processes import fake_model
from bench.wiring import bench_app, context_settings, instruction
from bot.domain import SessionKey, Turn
from bot.gemini.contents import build_request
from bot.storage.blobs import BlobStore, unpack_content
from tests.fakes import gemini_rules as rules

NAME = "request_size"
REQUEST_LIMIT_BYTES = 20 * report.MB
TARGET_RATIO = 0.25


async def run(ctx: Run, *, turns: int | None = None) -> dict[str, Any]:
    turns = turns or (30 if ctx.quick else 60)
    await ctx.photos_ready()
    failures: list[str] = []
    async with fake_model(ctx.work, latency=0.0) as fake:
        async with bench_app(ctx.fresh_dir("request-size"), fake) as app:
            settings = context_settings(app.settings)
            key = SessionKey("cli", "bench", "request-size", "session-1")
            turn_ids = []
            for k in range(1, turns + 1):
                turn = await app.service.submit_edit(key, "bench", instruction(k))
                result = await app.service.run_turn(turn.id)
                turn_ids.append(turn.id)
                if result.status != "ok":
                    failures.append(f"turn {k}: {result.status} ({result.reason}: {result.message})")
                    break
            sent = (await fake.stats())["requests"]
            state = await app.store.load_state(result.session_id)
            model = state.session.model
            full = _full_replays(state.by_id, turn_ids, app.blobs)
    if len(sent) != len(turn_ids):
        failures.append(f"{len(sent)} requests for {len(turn_ids)} turns (retries?): "
                        "pairing by order may be off")
    rows = []
    for k, (req, (full_bytes, full_tokens, full_images)) in enumerate(zip(sent, full, strict=False), 1):
        tokens = req["text_tokens"] + req["image_tokens"]
        rows.append({"turn": k, "bytes": req["bytes"], "tokens": tokens, "images": req["images"],
                     "status": req["status"], "full_bytes": full_bytes,
                     "full_tokens": full_tokens, "full_images": full_images})
    result = _summarise(rows, model, turns, failures, settings)
    _print(result)
    charts.request_size(result, ctx.chart(NAME))
    return result


def _lineage(by_id: dict[int, Turn], turn_id: int | None) -> list[Turn]:
    """Every version from the root to `turn_id`, across any re-anchoring: what full replay sends."""
    path = []
    while turn_id is not None:
        path.append(by_id[turn_id])
        turn_id = by_id[turn_id].parent_turn_id
    return path[::-1]


def _full_replays(by_id: dict[int, Turn], turn_ids: list[int],
                  blobs: BlobStore) -> list[tuple[int, int, int]]:
    weights: dict[tuple[int, str], tuple[int, int, int]] = {}

    def weigh(t: Turn, side: str) -> tuple[int, int, int]:
        """(JSON bytes, tokens, images) of one stored content, once per content."""
        if (t.id, side) not in weights:
            packed = t.user_content if side == "user" else (t.model_content or {})
            content = unpack_content(packed, blobs)
            images = sum(1 for p in content.get("parts", []) if "inlineData" in p)
            text, image = rules.count_tokens(t.model, [content])
            weights[t.id, side] = (len(json.dumps(content, separators=(",", ":"))), text + image,
                                   images)
        return weights[t.id, side]

    out = []
    for turn_id in turn_ids:
        turn = by_id[turn_id]
        parts = [weigh(t, side) for t in _lineage(by_id, turn.parent_turn_id)
                 for side in ("user", "model")] + [weigh(turn, "user")]
        frame = build_request([], {}, model=turn.model, aspect=turn.aspect_ratio,
                              size=turn.image_size)
        frame["contents"] = []  # what surrounds the contents: {"contents":[...],"generationConfig":..}
        size = len(json.dumps(frame, separators=(",", ":"))) + sum(p[0] for p in parts) + len(parts) - 1
        out.append((size, sum(p[1] for p in parts), sum(p[2] for p in parts)))
    return out


def _summarise(rows: list[dict[str, Any]], model: str, turns: int, failures: list[str],
               settings: dict[str, Any]) -> dict[str, Any]:
    token_limit = rules.INPUT_LIMIT[model]
    over = [r["turn"] for r in rows if r["bytes"] > REQUEST_LIMIT_BYTES or r["tokens"] > token_limit]
    last = rows[-1] if rows else None
    ratio = last["bytes"] / last["full_bytes"] if last else None

    def first(pred: Any) -> int | None:
        return next((r["turn"] for r in rows if pred(r)), None)

    complete = last is not None and last["turn"] == turns and not failures
    return {
        "model": model, "turns": turns, "rows": rows, "failures": failures,
        "context_settings": settings, "token_limit": token_limit,
        "request_limit_bytes": REQUEST_LIMIT_BYTES, "bounded_over_limits": over,
        "max_bytes": max((r["bytes"] for r in rows), default=0),
        "max_tokens": max((r["tokens"] for r in rows), default=0),
        "full_over_bytes_from": first(lambda r: r["full_bytes"] > REQUEST_LIMIT_BYTES),
        "full_over_tokens_from": first(lambda r: r["full_tokens"] > token_limit),
        "last_bytes_ratio": ratio,
        "total_bytes": sum(r["bytes"] for r in rows),
        "total_full_bytes": sum(r["full_bytes"] for r in rows),
        "total_tokens": sum(r["tokens"] for r in rows),
        "total_full_tokens": sum(r["full_tokens"] for r in rows),
        "target": f"turn {turns} bytes <= {TARGET_RATIO:.0%} of full replay, never over limits",
        "pass": (complete and ratio is not None and ratio <= TARGET_RATIO and not over)
        if rows else None,
    }


def _print(r: dict[str, Any]) -> None:
    report.heading("2. Request size per turn: the bot's requests against full replay")
    print(f"One session, {r['turns']} turns, {r['model']} at 2K. Context settings: "
          f"{r['context_settings'] or 'none (full replay)'}. Limits: {r['token_limit']:,} input "
          f"tokens, {r['request_limit_bytes'] / report.MB:g} MB per request.")
    report.table(
        ["turn", "sent MB", "full MB", "sent/full", "sent tokens", "full tokens", "sent/full",
         "images sent/full", "within limits"],
        [[x["turn"], report.mb(x["bytes"]), report.mb(x["full_bytes"]),
          f"{x['bytes'] / x['full_bytes']:.2f}", f"{x['tokens']:,}", f"{x['full_tokens']:,}",
          f"{x['tokens'] / x['full_tokens']:.2f}", f"{x['images']}/{x['full_images']}",
          "no" if x["turn"] in r["bounded_over_limits"] else "yes"] for x in r["rows"]])
    print(f"Largest request sent: {report.mb(r['max_bytes'])} MB, {r['max_tokens']:,} tokens; "
          f"over a limit: {r['bounded_over_limits'] or 'never'}.")
    if r["rows"]:
        print(f"Whole session: {report.mb(r['total_bytes'])} MB sent against "
              f"{report.mb(r['total_full_bytes'])} MB for full replay "
              f"({r['total_bytes'] / r['total_full_bytes']:.2f}); {r['total_tokens']:,} input tokens "
              f"against {r['total_full_tokens']:,} "
              f"({r['total_tokens'] / r['total_full_tokens']:.2f}).")
    print(f"Full replay would pass 20 MB from turn {r['full_over_bytes_from'] or '-'} and the "
          f"token limit from turn {r['full_over_tokens_from'] or '-'}.")
    for failure in r["failures"]:
        print(f"FAILED {failure}")
    print(f"Target: {r['target']}: {report.verdict(r['pass'])}")
