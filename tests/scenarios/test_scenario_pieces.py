"""The Locust-free parts of the scenarios: load curves, prompts, batch checks, options, failures."""

from __future__ import annotations

from argparse import Namespace
from pathlib import Path

import orjson
import pytest

import generators
from harness.driver.errors import Failure
from harness.errors import UserError
from harness.locust.batch import batch_file, check_results, multipart
from harness.locust.curves import users_at
from harness.locust.failures import RequestFailed, from_exception, from_stream_error
from harness.locust.options import Settings, check_options
from harness.locust.prompts import Prompt, dataset_source, generated_source


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ("steady", [10, 10, 10, 10, 10]),
        ("soak", [10, 10, 10, 10, 10]),
        ("ramp", [1, 3, 5, 7, 9]),
        ("step", [2, 4, 6, 8, 10]),
        ("spike", [2, 2, 10, 2, 2]),
    ],
)
def test_load_curves_follow_their_shape_and_end_on_time(shape: str, expected: list[int]) -> None:
    assert [users_at(shape, t, 100.0, 10) for t in (1, 21, 41, 61, 81)] == expected
    assert users_at(shape, 100.0, 100.0, 10) is None


def test_processes_take_disjoint_slices_that_cover_the_candidates() -> None:
    parts = [generated_source(7, seed=3, model=None, max_tokens=8, part=p, parts=2) for p in (0, 1)]
    firsts = [[source.next().custom_id for _ in range(4)] for source in parts]
    assert firsts[0] == ["cand-0000000", "cand-0000002", "cand-0000004", "cand-0000006"]
    assert firsts[1][:3] == ["cand-0000001", "cand-0000003", "cand-0000005"]
    assert firsts[1][3] == "cand-0000001"  # the slice comes round again
    prompt = parts[0].next()
    custom_id, body = prompt.custom_id, prompt.body
    assert prompt.encoded("openai", False) is prompt.encoded("openai", False)  # encoded once
    assert orjson.loads(prompt.encoded("openai", False))["messages"] == body["messages"]
    assert body["model"] == generators.DEFAULT_MODEL
    assert body["max_tokens"] == 8
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert orjson.loads(body["messages"][1]["content"])["id"] == custom_id


def test_a_dataset_is_streamed_in_slices(tmp_path: Path) -> None:
    path = tmp_path / "five.jsonl"
    generators.write_dataset(path, 5, fmt="jsonl", seed=1)
    source = dataset_source(str(path), model="other", max_tokens=4, part=1, parts=2)
    seen = [source.next() for _ in range(3)]
    assert [p.custom_id for p in seen] == ["cand-0000001", "cand-0000003", "cand-0000001"]
    assert {p.body["model"] for p in seen} == {"other"}
    with pytest.raises(LookupError, match="no request for this process"):
        dataset_source(str(path), model=None, max_tokens=None, part=7, parts=8)


def test_batch_files_have_unique_ids_and_results_are_checked_exactly_once() -> None:
    content, ids = batch_file([Prompt("a", {"x": 1}), Prompt("b", {"x": 2}), Prompt("a", {"x": 3})])
    assert ids == ["a", "b", "a~2"]
    lines = [orjson.loads(line) for line in content.splitlines()]
    assert [line["custom_id"] for line in lines] == ids
    assert lines[0]["url"] == "/v1/chat/completions"

    def result(custom_id: str, status: int = 200) -> bytes:
        return orjson.dumps(
            {"custom_id": custom_id, "response": {"status_code": status}, "error": None}
        )

    good = check_results(ids, result("a") + b"\n" + result("b"), result("a~2", 500))
    assert good.exactly_once
    assert (good.succeeded, good.failed) == (2, 1)
    bad = check_results(ids, result("a") + b"\n" + result("a") + b"\n" + result("zz"), b"")
    assert not bad.exactly_once
    assert (bad.missing, bad.duplicated, bad.unexpected) == (["a~2", "b"], ["a"], ["zz"])
    assert "2 missing" in bad.describe()


def test_multipart_upload_names_purpose_and_file() -> None:
    body, content_type = multipart(b'{"custom_id": "a"}\n', "c.jsonl")
    boundary = content_type.split("boundary=")[1]
    assert body.startswith(f"--{boundary}\r\n".encode())
    assert b'name="purpose"\r\n\r\nbatch\r\n' in body
    assert b'filename="c.jsonl"' in body
    assert body.endswith(f"\r\n--{boundary}--\r\n".encode())


def _options(**overrides: object) -> Namespace:
    values = {
        "host": None,
        "dataset": None,
        "server_args": "",
        "run_dir": None,
        "csv_prefix": None,
        "html_file": None,
        "json_file": None,
    }
    return Namespace(**{**values, **overrides})


def test_options_refuse_non_loopback_hosts_and_missing_datasets(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not a loopback"):
        check_options(_options(host="http://10.1.2.3:8000"))
    with pytest.raises(UserError, match="harness gen"):
        check_options(_options(dataset=str(tmp_path / "absent.jsonl")))
    with pytest.raises(UserError, match="cannot be split"):
        check_options(_options(server_args='--profile "unclosed'))
    check_options(_options(host="http://localhost:8000"))


def test_relative_outputs_land_in_an_explicit_run_dir(tmp_path: Path) -> None:
    absolute = str(tmp_path / "elsewhere.html")
    options = _options(run_dir=str(tmp_path / "run"), csv_prefix="stats", html_file=absolute)
    check_options(options)
    assert options.csv_prefix == str(tmp_path / "run" / "stats")
    assert options.html_file == absolute
    untouched = _options(csv_prefix="stats")
    check_options(untouched)
    assert untouched.csv_prefix == "stats"


def test_settings_accept_the_strings_the_web_ui_sends() -> None:
    settings = Settings.from_options(
        Namespace(api="ollama", model="", max_tokens="16", candidates="50", chaos_every="2s")
    )
    assert (settings.api, settings.model, settings.max_tokens) == ("ollama", None, 16)
    assert (settings.candidates, settings.chaos_every, settings.load_shape) == (50, 2.0, "steady")
    with pytest.raises(UserError, match="--max-tokens"):
        Settings.from_options(Namespace(max_tokens="0"))
    with pytest.raises(UserError, match="--api"):
        Settings.from_options(Namespace(api="grpc"))


def test_failures_read_as_their_cause_without_varying_details() -> None:
    oom = from_stream_error(
        200, "CUDA out of memory. Tried to allocate 20.00 MiB (GPU 0; 16.00 GiB total capacity)"
    )
    assert oom.cause == "oom_error"
    assert repr(RequestFailed(oom)) == "oom_error (HTTP 200): CUDA out of memory"
    other = RequestFailed(Failure("http_5xx", 503, "Service Unavailable; retry later"))
    assert str(other) == "http_5xx (HTTP 503): Service Unavailable"
    assert from_exception(ConnectionRefusedError(111, "Connection refused")).cause == "connection"
    assert from_exception(TimeoutError("timed out")).cause == "timeout"
