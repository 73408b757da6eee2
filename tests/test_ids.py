"""The one generator of message ids, link tokens and reply codes (``warnd.engine.ids``)."""

from __future__ import annotations

import re

import pytest

from warnd.engine.ids import (
    CodesExhausted,
    message_id_of,
    new_link_token,
    new_message_id,
    new_reply_code,
    route_message_id,
)


def test_message_ids_are_time_ordered_uuid7_and_distinct() -> None:
    ids = [new_message_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for i in ids:
        assert re.fullmatch(r"[0-9a-f]{12}7[0-9a-f]{3}[89ab][0-9a-f]{15}", i), i
    assert [i[:12] for i in ids] == sorted(i[:12] for i in ids)  # millisecond time first


def test_route_ids_map_back_to_their_message() -> None:
    mid = new_message_id()
    assert route_message_id(mid, 0) == mid and route_message_id(mid, 2) == f"{mid}-2"
    assert message_id_of(f"{mid}-2") == message_id_of(mid) == mid
    assert message_id_of("abc-def") == "abc-def" and message_id_of("x-123") == "x-123"


def test_tokens_are_long_urlsafe_and_distinct() -> None:
    tokens = {new_link_token() for _ in range(200)}
    assert len(tokens) == 200
    for token in tokens:
        assert re.fullmatch(r"[A-Za-z0-9_-]+", token)
        assert len(token) * 6 >= 128


def test_reply_codes_are_short_numeric_and_avoid_existing() -> None:
    code = new_reply_code(set())
    assert re.fullmatch(r"[1-9][0-9]{3}", code)
    taken = {str(n) for n in range(1000, 10000)}  # every 4-digit code is open
    code = new_reply_code(taken)
    assert re.fullmatch(r"[1-9][0-9]{4}", code) and code not in taken
    held: set[str] = set()
    for _ in range(500):
        c = new_reply_code(held)
        assert c not in held
        held.add(c)
    assert len(held) == 500


def test_reply_code_gives_up_cleanly_when_everything_is_taken() -> None:
    class Everything:
        def __contains__(self, item: object) -> bool:
            return True

    with pytest.raises(CodesExhausted, match="no free reply code"):
        new_reply_code(Everything())


def test_reply_codes_are_uniform_over_four_digits() -> None:
    firsts = [new_reply_code()[0] for _ in range(9000)]
    counts = {d: firsts.count(d) for d in "123456789"}
    assert set(counts) == set("123456789") and min(counts.values()) > 700  # ~1,000 each
