"""Exit classification: the words a user reads when the target dies."""

from __future__ import annotations

from pathlib import Path

from harness.supervision.exits import (
    COMPLETED,
    CRASH,
    OOM_ERROR,
    OOM_KILL,
    OOM_KILL_ADVICE,
    STOPPED,
    classify_exit,
    find_engine_death_line,
    find_oom_line,
)

CUDA_OOM = "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB (GPU 0; ...)"


def test_sigkill_is_an_oom_kill_with_the_advice() -> None:
    verdict = classify_exit(-9)
    assert verdict.cause == OOM_KILL
    assert verdict.signal == "SIGKILL"
    assert verdict.message.startswith(OOM_KILL_ADVICE)
    assert verdict.line.startswith("target exited: OOM kill (SIGKILL, exit -9): killed by SIGKILL")


def test_sigkill_evidence_names_who_sent_it() -> None:
    by_limit = classify_exit(-9, memory_limit=(600 << 20, 512 << 20)).message
    assert "600.0 MiB passed --memory-limit 512.0 MiB" in by_limit
    assert "injected on purpose" in classify_exit(-9, injected=True).message
    assert "OOM killer did it" in classify_exit(-9, kernel_oom_kill=True).message
    assert "another process may have sent it" in classify_exit(-9, kernel_oom_kill=False).message


def test_oom_text_makes_a_nonzero_exit_an_oom_error() -> None:
    verdict = classify_exit(1, oom_line=CUDA_OOM)
    assert verdict.cause == OOM_ERROR
    assert "GPU memory" in verdict.message and "CUDA out of memory" in verdict.message
    aborted = classify_exit(-6, oom_line="terminate called after throwing 'std::bad_alloc'")
    assert aborted.cause == OOM_ERROR and aborted.signal == "SIGABRT"
    assert "GPU" not in aborted.message


def test_other_exits() -> None:
    assert classify_exit(3).cause == CRASH
    assert classify_exit(-11).message.startswith("killed by SIGSEGV")
    assert classify_exit(0).cause == COMPLETED
    assert classify_exit(0, oom_line=CUDA_OOM).cause == COMPLETED  # it handled its OOM and finished
    stopped = classify_exit(-9, stopped=True)  # our own stop wins over everything
    assert stopped.cause == STOPPED and "SIGKILL" in stopped.message


def test_find_oom_line_reads_only_this_childs_output(tmp_path: Path) -> None:
    log = tmp_path / "target.log"
    log.write_bytes(b"old child: MemoryError\n")
    offset = log.stat().st_size
    with log.open("ab") as handle:
        handle.write(b"loading\n" + CUDA_OOM.encode() + b"\nshutting down\n")
    assert find_oom_line(log, offset) == CUDA_OOM
    assert find_oom_line(log, log.stat().st_size) is None
    assert find_oom_line(tmp_path / "missing.log") is None
    for text in (b"std::bad_alloc", b"Cannot allocate memory", b"cudaMalloc failed: out of memory"):
        log.write_bytes(b"x\n" + text + b"\n")
        assert find_oom_line(log) == text.decode()


def test_a_supervised_server_has_no_normal_finish() -> None:
    assert classify_exit(0, supervised=True).cause == CRASH
    assert classify_exit(0, supervised=True, stopped=True).cause == STOPPED


def test_engine_death_or_a_sigkilled_descendant_is_an_oom_kill_whatever_the_code() -> None:
    line = "vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue."
    for code in (0, 1):
        verdict = classify_exit(code, engine_death_line=line, supervised=True)
        assert verdict.cause == OOM_KILL and "EngineDeadError" in verdict.message
    verdict = classify_exit(0, descendant_killed="python3 (pid 7)")
    assert verdict.cause == OOM_KILL and "pid 7" in verdict.message
    # the engine said why: CUDA OOM text is an OOM error, not a kill
    cuda = "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
    assert classify_exit(0, oom_line=cuda, engine_death_line=line, supervised=True).cause == (
        OOM_ERROR
    )


def test_engine_death_text_is_found_in_the_log_tail(tmp_path: Path) -> None:
    log = tmp_path / "target.log"
    log.write_bytes(
        b"INFO ok\nERROR Worker proc VllmWorker-0 died unexpectedly, shutting down executor.\n"
    )
    assert "died unexpectedly" in (find_engine_death_line(log) or "")
    assert find_engine_death_line(log, start=log.stat().st_size) is None
    ollama = tmp_path / "ollama.log"
    ollama.write_bytes(b"Error: llama runner process has terminated: signal: killed\n")
    assert find_engine_death_line(ollama) is not None
