"""Request ids (``api.observability.access.new_request_id``): 24 hex digits, never one
twice, and a forked worker gives none of those its parent had read but not given."""

from __future__ import annotations

import os
import re

from api.observability.access import FRESH_IDS_PER_READ, new_request_id


def test_request_ids_are_24_hex_digits_and_never_repeat() -> None:
    ids = [new_request_id() for _ in range(3 * FRESH_IDS_PER_READ + 7)]
    assert all(re.fullmatch(r"[0-9a-f]{24}", rid) for rid in ids)
    assert len(set(ids)) == len(ids)


def test_a_forked_child_gives_none_of_its_parents_ids() -> None:
    new_request_id()  # the parent now holds ids read but not given
    reading, writing = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child
        try:
            os.write(writing, "".join(new_request_id() for _ in range(10)).encode())
        finally:
            os._exit(0)
    os.close(writing)
    with os.fdopen(reading) as pipe:
        text = pipe.read()
    os.waitpid(child, 0)
    theirs = {text[i : i + 24] for i in range(0, len(text), 24)}
    ours = {new_request_id() for _ in range(FRESH_IDS_PER_READ)}
    assert len(theirs) == 10 and not theirs & ours
