"""What stops a Locust run before it floods or exposes anything: sockets bound to loopback only,
a dead --host, an unknown user class, a server that speaks another API, and repeated 4xx.

Each runs the real `locust -f scenarios/` against a real server process on 127.0.0.1.
"""

from __future__ import annotations

import subprocess
import sys
import time
from argparse import Namespace
from pathlib import Path

import psutil
import pytest
from scenario_runs import ROOT, Run, http_requests, locust, serving

from harness.driver.errors import REJECTIONS_BEFORE_STOP as _REJECTIONS_BEFORE_STOP
from harness.locust.options import exposure_warnings
from harness.net import free_port

FAKE_SERVER = str(ROOT / "tests" / "scenarios" / "programs" / "openai_only_server.py")


def _listening(root: psutil.Process) -> list[tuple[str, int]]:
    """(address, port) of every socket the process tree listens on."""
    found = []
    for process in [root, *root.children(recursive=True)]:
        try:
            connections = process.net_connections(kind="inet")
        except psutil.Error:
            continue
        found += [c.laddr[:2] for c in connections if c.status == psutil.CONN_LISTEN]
    return found


def test_the_web_ui_and_the_master_port_listen_on_loopback_only(tmp_path: Path) -> None:
    web_port, master_port = free_port(), free_port()
    command = [sys.executable, "-m", "locust", "-f", "scenarios/", "--master"]
    command += ["--web-port", str(web_port), "--master-bind-port", str(master_port)]
    command += ["--run-dir", str(tmp_path), "--server-args=--speed max"]
    locust_process = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        root = psutil.Process(locust_process.pid)
        deadline = time.monotonic() + 60
        while not {web_port, master_port} <= {port for _, port in _listening(root)}:
            assert locust_process.poll() is None, locust_process.stderr.read()[-2000:]
            assert time.monotonic() < deadline, f"not listening: {_listening(root)}"
            time.sleep(0.1)
        listening = _listening(root)  # the embedded server's socket too
    finally:
        locust_process.terminate()
        _, errors = locust_process.communicate(timeout=60)
    assert len(listening) >= 3
    assert {address for address, _ in listening} == {"127.0.0.1"}, listening
    assert "listens on" not in errors  # nothing opened wider: no warning


def test_opening_a_socket_wider_warns_in_one_line() -> None:
    base = {"web_port": 8089, "master_bind_port": 5557, "web_login": False, "processes": None}
    quiet = Namespace(**base, headless=False, web_host="127.0.0.1", master_bind_host="::1")
    assert exposure_warnings(Namespace(**{**vars(quiet), "master": True})) == []
    wide = Namespace(**base, headless=False, web_host="*", master=True, master_bind_host="0.0.0.0")
    web, master = exposure_warnings(wide)
    assert "web UI listens on *:8089 without a login" in web and "\n" not in web
    assert "master listens on 0.0.0.0:5557" in master
    headless = Namespace(**base, headless=True, web_host="", master=False, master_bind_host="*")
    assert exposure_warnings(headless) == []  # no web UI, no master: nothing listens


def _stopped_in_one_line(run: Run, text: str) -> None:
    assert run.returncode == 2, run.output[-3000:]
    assert text in run.output
    assert "Traceback" not in run.output


def test_a_dead_host_stops_in_one_line_before_any_run_directory(tmp_path: Path) -> None:
    port = free_port()  # nothing listens on it
    command = [sys.executable, "-m", "locust", "-f", str(ROOT / "scenarios"), "--headless"]
    command += ["--host", f"http://127.0.0.1:{port}", "-t", "5s"]
    done = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=30, check=False
    )
    run = Run(done.returncode, done.stdout + done.stderr, tmp_path)
    _stopped_in_one_line(run, f"nothing answers at http://127.0.0.1:{port}; start the server")
    assert list(tmp_path.iterdir()) == []  # no runs/locust-... left behind


def test_an_unknown_user_class_lists_the_valid_names(tmp_path: Path) -> None:
    run = locust(tmp_path, "-t", "1s", "ChatUser", "ChatUsr", timeout=30)
    _stopped_in_one_line(run, "unknown user class ChatUsr; the locustfiles define BatchJobUser, ")
    assert "ChatUser, OllamaChatUser, StreamingChatUser" in run.output


def test_ollama_users_against_an_openai_only_server_stop_before_sending(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with serving([sys.executable, FAKE_SERVER, str(port)], f"{url}/v1/models"):
        ollama = locust(tmp_path / "a", "--host", url, "-u", "2", "-t", "20s", "OllamaChatUser")
        api = locust(tmp_path / "b", "--host", url, "--api", "ollama", "-t", "20s", "ChatUser")
    _stopped_in_one_line(ollama, f"{url} does not speak Ollama's API, which OllamaChatUser sends")
    assert "it looks like an OpenAI-compatible server (GET /v1/models: 200" in ollama.output
    assert "use --api openai with ChatUser StreamingChatUser" in ollama.output
    _stopped_in_one_line(api, "does not speak Ollama's API, which ChatUser sends")


@pytest.mark.parametrize("users", ["ChatUser", "BatchJobUser"])
def test_repeated_rejections_stop_the_run_as_harness_scale_does(tmp_path: Path, users: str) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # lists no models, so the pre-check passes; then every request gets vLLM's 404
    command = [sys.executable, FAKE_SERVER, str(port), "--no-models", "--reject"]
    with serving(command, f"{url}/v1/models"):
        started = time.monotonic()
        run = locust(tmp_path, "--host", url, "-u", "2", "-r", "2", "-t", "30s", users)
        took = time.monotonic() - started
    _stopped_in_one_line(run, f"the target rejected the first {_REJECTIONS_BEFORE_STOP} requests")
    assert "check --model, --api and --host" in run.output
    assert run.output.count("Stopping:") == 1
    # the users in flight when it stopped finish theirs; nothing like a flood
    assert _REJECTIONS_BEFORE_STOP <= http_requests(run) <= _REJECTIONS_BEFORE_STOP + 4
    assert took < 25  # it stopped, rather than ran out its -t
