"""Property (found by fuzzing): a dataset `harness scale` accepts up front is one whose every
request the driver can read, in one process or in shares; any other is a one-line UserError."""

from __future__ import annotations

import tempfile
from pathlib import Path

import hypothesis
import orjson
from hypothesis import strategies as st

from harness.driver.dataset import from_file
from harness.driver.payloads import Share, iter_payloads, pending, request_end
from harness.errors import UserError

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=6,
)
_REQUEST = st.builds(
    lambda custom_id, body: {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": body,
    },
    st.text(min_size=1, max_size=8),
    st.dictionaries(st.sampled_from(["model", "messages", "max_tokens"]), _JSON, max_size=3),
)


def _line(value: object, cut: int | None) -> bytes:
    line = orjson.dumps(value)
    return line[:cut] if cut is not None else line


@hypothesis.settings(max_examples=80, deadline=None, derandomize=True, database=None)
@hypothesis.given(
    st.lists(
        st.tuples(
            st.one_of(_REQUEST, _REQUEST, _REQUEST, _JSON),
            st.none() | st.none() | st.integers(0, 60),
        ),
        min_size=1,
        max_size=8,
    )
)
def test_an_accepted_dataset_is_read_whole_by_every_reader(lines):
    data = b"\n".join(_line(value, cut) for value, cut in lines) + b"\n"
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "requests.jsonl"
        path.write_bytes(data)
        try:
            dataset = from_file(path, hashed=False)
        except UserError as exc:
            assert "\n" not in str(exc)
            return
        sent = [custom_id for custom_id, _ in pending(path, dataset.n)]
        assert len(sent) == dataset.n
        end = request_end(path, dataset.n)
        shares = [
            c
            for k in range(2)
            for c, _ in iter_payloads(path, limit=dataset.n, share=Share(k, 2, end))
        ]
        assert sorted(shares) == sorted(sent)
