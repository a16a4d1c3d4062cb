"""Property (found by fuzzing run directories): lines of any JSON appended to a run's files,
and manifest keys of any JSON, never make the summary fail; the figures of whole records stay."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import hypothesis
import orjson
import pytest
from hypothesis import strategies as st
from synthetic_run import write_synthetic_run

from reports import write_summary

_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats()
    | st.text(max_size=4),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)
_KEYS = st.sampled_from(
    ["t", "kind", "source", "ok", "error", "status", "latency_s", "t_end", "rss_bytes"]
)
_RECORD = st.dictionaries(_KEYS, _JSON, max_size=4) | _JSON
_MANIFEST_KEYS = st.sampled_from(
    ["run_id", "dataset", "calibration", "host", "cost", "results", "verification", "slo", "seed"]
)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("report-property") / "run"
    write_synthetic_run(path, duration_s=60.0, kills_at=(0.5,))
    return path


@hypothesis.settings(max_examples=40, deadline=None, derandomize=True, database=None)
@hypothesis.given(
    st.lists(st.tuples(st.sampled_from(["requests", "events", "samples"]), _RECORD), max_size=6),
    st.dictionaries(_MANIFEST_KEYS, _JSON, max_size=3),
)
def test_any_json_in_a_run_directory_leaves_the_summary_standing(base, lines, manifest_keys):
    with tempfile.TemporaryDirectory() as directory:
        run = Path(directory) / "run"
        shutil.copytree(base, run)
        for name, record in lines:
            with open(run / f"{name}.jsonl", "ab") as handle:
                handle.write(orjson.dumps(record, option=orjson.OPT_NON_STR_KEYS) + b"\n")
        manifest = orjson.loads((run / "manifest.json").read_bytes())
        manifest.update(manifest_keys)
        (run / "manifest.json").write_bytes(orjson.dumps(manifest))
        files = write_summary(run)
        assert orjson.loads(files.summary_path.read_bytes())["run"]["run_id"]
