"""Failover (issue 17): stock y-websocket clients through a real HAProxy in front of three hub
processes keep typing while one process drains on SIGTERM and another is killed with SIGKILL;
a private Redis restarted in the middle of a burst. Nothing any client had seen is lost, the
survivors keep serving, the log stays one gap-free sequence."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
import urllib.request

import pytest

from collab.testing import HUB_ONLY, HAProxy, HubProcess, free_port
from tests.test_cluster import cluster_env, converged, log_seqs, start_hubs, stop_all, type_words
from tests.test_js_interop import js  # noqa: F401 - the fixture

pytestmark = [pytest.mark.node, pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow]


def peers_of(hub: HubProcess) -> int:
    with urllib.request.urlopen(hub.url + "/healthz", timeout=5) as r:
        return json.load(r)["peers"]


def test_sigterm_and_kill_9_behind_haproxy_lose_nothing(tmp_path, pg_url, redis_url, js):
    if not shutil.which(HAProxy.BINARY):
        pytest.fail(f"{HAProxy.BINARY} missing: apt-get install haproxy (.ci/run installs it)")
    lb_port = free_port()
    env = cluster_env(redis_url, TINYMORPH_ALLOWED_HOSTS=f"127.0.0.1:{lb_port}")
    hubs = [HubProcess(tmp_path / f"hub{i}", db=pg_url, env=env) for i in range(3)]
    lb = HAProxy(tmp_path / "haproxy", [h.port for h in hubs], port=lb_port)
    try:
        for hub in hubs:
            hub.start()
        lb.start()
        doc_id, _ = hubs[0].create_doc("failover")
        clients = [js(lb.ws_url, doc_id, name=n) for n in ("ann", "bob", "cyd", "dan", "eve", "fay")]
        for c in clients:
            c.wait_synced()
        # Round-robin spread them over all three processes.
        assert [peers_of(h) for h in hubs] == [2, 2, 2]
        typed = type_words(clients, 10)
        converged(clients, typed)

        # SIGTERM: hub0 stops listening (out of rotation), drains its sockets and exits 0;
        # its clients reconnect through HAProxy to the others while everybody keeps typing.
        hubs[0].proc.send_signal(signal.SIGTERM)
        more = type_words(clients, 10, pause=0.05, tag="t")
        assert hubs[0].stop() == 0
        for name, words in more.items():
            typed[name] += words
        converged(clients, typed)

        # SIGKILL in the middle of typing: hub1's clients reconnect to hub2, nothing seen is lost.
        first = type_words(clients, 5, pause=0.02, tag="k")
        hubs[1].stop(signal.SIGKILL)
        second = type_words(clients, 10, pause=0.05, tag="s")
        for part in (first, second):
            for name, words in part.items():
                typed[name] += words
        text = converged(clients, typed, timeout=40)
        assert peers_of(hubs[2]) == 6
        # The survivor holds the whole text, and the log one gap-free sequence.
        status, body = hubs[2].request("GET", f"/api/docs/{doc_id}")
        assert status == 200 and body["text"] == text
        seqs = log_seqs(pg_url, doc_id)
        assert seqs == list(range(1, len(seqs) + 1))
    finally:
        lb.stop()
        stop_all(hubs)


@pytest.fixture
def private_redis(tmp_path):
    """A redis-server of our own on a free port (this test restarts it)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server missing (apt-get install redis-server)")
    port = free_port()
    cmd = [binary, "--port", str(port), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1",
           "--dir", str(tmp_path)]

    class Server:
        url = f"redis://127.0.0.1:{port}/0"
        proc: subprocess.Popen | None = None

        def start(self) -> None:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 10
            while subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True,
                                 text=True).stdout.strip() != "PONG":
                assert time.monotonic() < deadline, "private redis-server did not start"
                time.sleep(0.05)

        def pause(self) -> None:
            self.proc.send_signal(signal.SIGSTOP)

        def resume(self) -> None:
            self.proc.send_signal(signal.SIGCONT)

        def kill(self) -> None:
            if self.proc is not None:
                self.resume()
                self.proc.kill()
                self.proc.wait(10)
                self.proc = None

    server = Server()
    server.start()
    yield server
    server.kill()


def four_peers(hubs: list[HubProcess], js, title: str) -> tuple[str, list]:
    """A new document and four synced stock clients on it, client i on hub i mod 2."""
    doc_id, _ = hubs[0].create_doc(title)
    clients = [js(hubs[i % 2].ws_url, doc_id, name=n) for i, n in enumerate(("ann", "bob", "cyd", "dan"))]
    for c in clients:
        c.wait_synced()
    return doc_id, clients


def served_alone(clients, during: dict[str, list[str]], what: str) -> None:
    """Each client (client i on process i mod 2) got the words its own process's other peers
    typed ``during`` an outage of Redis."""
    for c in clients:
        mates = [o for o in clients if o is not c and clients.index(o) % 2 == clients.index(c) % 2]
        words = [w for o in mates for w in during[o.name]]
        c.wait_for(lambda c: all(w in (c.text or "") for w in words), what)


def caught_up(pg_url: str, doc_id: str, clients, typed: dict[str, list[str]], *parts: dict[str, list[str]]) -> None:
    """Everybody converges on every word typed, and the log is one gap-free sequence."""
    for part in parts:
        for name, words in part.items():
            typed[name] += words
    converged(clients, typed, timeout=40)
    seqs = log_seqs(pg_url, doc_id)
    assert seqs == list(range(1, len(seqs) + 1))


def test_redis_restart_mid_burst_loses_nothing(tmp_path, pg_url, private_redis, js):
    hubs = start_hubs(tmp_path, 2, pg_url, private_redis.url)
    try:
        doc_id, clients = four_peers(hubs, js, "redis restart")
        typed = type_words(clients, 10, pause=0.01)
        private_redis.kill()  # mid-burst: nothing of the stream survives (no persistence)
        during = type_words(clients, 10, pause=0.02, tag="d")
        served_alone(clients, during, "same-process words without redis")  # each process kept serving
        private_redis.start()
        caught_up(pg_url, doc_id, clients, typed, during, type_words(clients, 10, pause=0.01, tag="r"))
        # What each process missed while Redis was away, it read from the database.
        for hub in hubs:
            assert hub.request("GET", "/healthz")[1]["cluster"]["gaps_filled"] > 0
    finally:
        stop_all(hubs)


def test_redis_paused_mid_typing_commits_go_on_and_the_processes_catch_up(tmp_path, pg_url, private_redis, js):
    """Redis stops answering (SIGSTOP: connections stay open, nothing comes back) while peers
    type on two processes: each process keeps committing and serving its own peers; when Redis
    answers again each reads what it missed from the database and everybody converges."""
    hubs = start_hubs(tmp_path, 2, pg_url, private_redis.url)
    try:
        doc_id, clients = four_peers(hubs, js, "redis paused")
        typed = type_words(clients, 5, pause=0.02)
        converged(clients, typed)
        committed_before = len(log_seqs(pg_url, doc_id))
        private_redis.pause()
        paused_at = time.monotonic()
        try:
            during = type_words(clients, 10, pause=0.05, tag="p")
            served_alone(clients, during, "same-process words, redis paused")
            # Commits went on: every word typed meanwhile is in the log.
            deadline = time.monotonic() + 10
            while len(log_seqs(pg_url, doc_id)) < committed_before + 40:
                assert time.monotonic() < deadline, "commits stopped while redis was paused"
                time.sleep(0.1)
            time.sleep(max(0.0, paused_at + 8 - time.monotonic()))  # past the clients' socket timeouts
        finally:
            private_redis.resume()
        caught_up(pg_url, doc_id, clients, typed, during, type_words(clients, 5, pause=0.02, tag="r"))
        for hub in hubs:
            assert hub.request("GET", "/healthz")[1]["cluster"]["redis"] is True
    finally:
        stop_all(hubs)


def test_deploy_files_are_valid():
    """deploy/haproxy.cfg passes `haproxy -c`; the units start what exists."""
    from pathlib import Path

    deploy = Path(__file__).resolve().parents[1] / "deploy"
    check = subprocess.run([HAProxy.BINARY, "-c", "-f", str(deploy / "haproxy.cfg")], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    for unit, command in (("tinymorph-hub@.service", "tinymorph serve"), ("tinymorph-worker.service", "tinymorph worker")):
        text = (deploy / unit).read_text()
        assert command in text and "EnvironmentFile=/etc/tinymorph/tinymorph.env" in text
    env = (deploy / "tinymorph.env").read_text()
    for setting in ("TINYMORPH_CLUSTER_URL", "TINYMORPH_DB", "TINYMORPH_SECRET", "TINYMORPH_AUTH_MODE"):
        assert f"\n{setting}=" in env


def test_a_client_typing_through_a_hub_restart_is_held_not_refused(tmp_path, js):
    """A stock client that types while its hub is killed and restarted sends its new keystrokes
    as soon as it reconnects, before its sync step 2 brings what the hub lost: the hub holds
    them until that arrives (a 44xx close would stop y-websocket for good)."""
    hub = HubProcess(tmp_path / "hub", env=HUB_ONLY)
    try:
        hub.start()
        doc_id, _ = hub.create_doc("restart")
        ann = js(hub.ws_url, doc_id, name="ann")
        ann.wait_synced()
        typed = type_words([ann], 10, pause=0.01)
        hub.stop(signal.SIGKILL)  # what it had not committed is gone from the hub, not from ann
        more = type_words([ann], 5, pause=0.01, tag="o")
        hub.start()
        after = type_words([ann], 30, pause=0.02, tag="r")  # typing on while it reconnects
        for part in (more, after):
            typed["ann"] += part["ann"]
        words = typed["ann"]
        deadline = time.monotonic() + 30
        while True:
            status, body = hub.request("GET", f"/api/docs/{doc_id}")
            if status == 200 and all(w in body["text"] for w in words):
                break
            assert time.monotonic() < deadline, f"the hub never got {[w for w in words if w not in body['text']]}"
            time.sleep(0.2)
        closes = [e.get("code") for e in ann.events if e.get("ev") == "connection-close"]
        assert not [c for c in closes if c and 4400 <= c < 4500], f"refused for good: {closes}"
    finally:
        hub.stop()
    hub.assert_clean()
