"""Document IDs: safe for any quest, and spread over the key space."""

from __future__ import annotations

import re
import string

from hypothesis import given
from hypothesis import strategies as st

from dm.store import ExecutionKey

QUEST_CHARS = string.ascii_letters + string.digits + "-_.~"


@given(
    quest=st.text(alphabet=QUEST_CHARS, min_size=1, max_size=256)
    | st.text(max_size=300),
    attempt=st.integers(0, 2**32 - 1),
    execution=st.integers(0, 2**32 - 1),
)
def test_document_id_is_always_a_plain_id(quest, attempt, execution):
    doc_id = ExecutionKey(quest, attempt, execution).document_id()
    assert re.fullmatch(r"[0-9a-f]{64}", doc_id)


def test_document_id_differs_for_neighbours():
    ids = {
        ExecutionKey(q, a, e).document_id()
        for q in ("a", "a.", "aa")
        for a in (1, 2, 256)
        for e in (1, 2, 256)
    }
    assert len(ids) == 27


def test_document_id_cannot_be_confused_by_separators():
    # Without an unambiguous encoding, ("a1", 1, 1) and ("a", 11, 1) could collide.
    assert (
        ExecutionKey("a1", 1, 1).document_id() != ExecutionKey("a", 11, 1).document_id()
    )


def test_document_ids_of_sequential_executions_do_not_share_a_prefix():
    first_chars = {ExecutionKey("q", 1, n).document_id()[0] for n in range(1, 200)}
    assert len(first_chars) == 16
