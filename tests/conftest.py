"""Shared fixtures: real hub processes, real PostgreSQL and Redis; and the suite's rules.

- **A skip is a failure when CI=true.** Every part the suite needs (PostgreSQL, Redis, node and
  the npm packages, Chromium, the models) is installed in CI, so a test that skips there for a
  missing part did not run what it promises: ``pytest_runtest_makereport`` below turns the skip
  into a failure, whatever raised it (``pytest.skip``, ``importorskip``, a ``skipif`` marker, a
  fixture). Elsewhere it stays a skip with its reason. The one way out is a part that is truly
  optional: mark the test (or the module, ``pytestmark``) ``@pytest.mark.optional("why, in one
  line")`` and put the skip in a ``skipif`` marker or the test itself, not at module level.
  A module-level ``pytest.skip`` skips at collection, where no marker can be read: with CI=true
  the run fails (after running everything else) and names it.
- **A hub must end clean.** The hub fixtures stop their hub and fail the test if it logged a
  traceback, exited non-zero, or had to be killed (``HubProcess.assert_clean``). Hubs started by
  a test go in ``try/finally`` (or ``with HubProcess(...)``); whatever still runs at the end of
  the session is killed and reported.
- **Nothing hangs.** ``timeout`` in pyproject.toml bounds every test (pytest-timeout); every wait
  in a test has its own, shorter deadline.

``hub`` and ``hub_tokens`` are a fresh hub per test (for tests that restart, kill or configure
it, or that need an empty one); ``shared_hub`` and ``shared_hub_tokens`` are one hub per module
for tests that each work on their own documents. All are the hub alone (``HUB_ONLY``: no Celery
worker processes, no embedding graph).
"""

from __future__ import annotations

import os

import pytest

from collab.testing import HUB_ONLY, HubProcess

IN_CI = os.environ.get("CI", "").lower() == "true"
REDIS_URL = os.environ.get("TINYMORPH_TEST_REDIS", "redis://127.0.0.1:6379/15")

# Kept for modules that import it: the hub without the embedding graph (HUB_ONLY also drops the workers).
NO_GRAPH = {"TINYMORPH_GRAPH_ENABLED": "false"}


def require(part: str, reason: str) -> None:
    """Skip the running test: ``part`` (a service, a program, a model) is missing, ``reason``
    says how to get it. With CI=true the skip is a failure (see the module docstring)."""
    __tracebackhide__ = True  # the skip is reported at the caller's line
    pytest.skip(f"needs {part}: {reason}")


def need_service(name: str, exc: BaseException) -> None:
    __tracebackhide__ = True
    require(name, f"not reachable: {exc}")


# -- CI: a skipped required part fails ---------------------------------------------------------

_collect_skips: list[str] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if not report.skipped or hasattr(report, "wasxfail"):
        return
    optional = item.get_closest_marker("optional")
    reason = optional and (optional.args[0] if optional.args else optional.kwargs.get("reason", ""))
    if optional and (not isinstance(reason, str) or not reason.strip() or "\n" in reason.strip()):
        report.outcome = "failed"
        report.longrepr = ("@pytest.mark.optional needs its reason, in one line: "
                           "@pytest.mark.optional(\"why this part may be missing\")")
        return
    if IN_CI and not optional:
        why = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = (f"{why}\n-- with CI=true a skip is a failure: this test needs a part CI must "
                           "have. If the part is truly optional, mark the test @pytest.mark.optional(reason).")


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped:
        why = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _collect_skips.append(f"{collector.nodeid}: {why}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    leaked = list(HubProcess.live)
    for proc in leaked:
        proc.stop()
    if leaked:
        session.config._tm_leaked = [f"{p.data_dir} (port {p.port})" for p in leaked]
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if _collect_skips:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if _collect_skips:
        terminalreporter.section("skipped at collection with CI=true: failures", red=True)
        for line in _collect_skips:
            terminalreporter.line(line)
        terminalreporter.line("A module-level skip cannot be marked optional: use pytestmark = "
                              "[pytest.mark.optional(reason), pytest.mark.skipif(condition, reason=...)].")
    leaked = getattr(config, "_tm_leaked", None)
    if leaked:
        terminalreporter.section("hub processes still running at the end: killed", red=True)
        for line in leaked:
            terminalreporter.line(line)


# -- hubs --------------------------------------------------------------------------------------

def _run_hub(proc: HubProcess, user_token: bool = False):
    try:
        proc.start()
        if user_token:
            proc.user_token = proc.issue_token("alice", "Alice")
        yield proc
    finally:
        proc.stop()
    proc.assert_clean()


@pytest.fixture
def hub(tmp_path):
    """A hub in open auth mode on SQLite in a temp data dir, for this test alone."""
    yield from _run_hub(HubProcess(tmp_path / "hub", env=HUB_ONLY))


@pytest.fixture
def hub_tokens(tmp_path):
    """A hub in tokens mode; ``hub_tokens.user_token`` may create documents."""
    yield from _run_hub(HubProcess(tmp_path / "hub", auth_mode="tokens", env=HUB_ONLY), user_token=True)


@pytest.fixture(scope="module")
def shared_hub(tmp_path_factory):
    """One open-mode hub for a whole module: for tests that each create their own documents and
    leave the hub as they found it (no restart, no settings of their own)."""
    yield from _run_hub(HubProcess(tmp_path_factory.mktemp("shared-hub"), env=HUB_ONLY))


@pytest.fixture(scope="module")
def shared_hub_tokens(tmp_path_factory):
    """``hub_tokens`` for a whole module (the same rules as ``shared_hub``)."""
    yield from _run_hub(HubProcess(tmp_path_factory.mktemp("shared-hub-tokens"), auth_mode="tokens", env=HUB_ONLY),
                        user_token=True)


# -- services ----------------------------------------------------------------------------------

@pytest.fixture
def pg_url():
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    from promises_support import pg_database

    with pg_database() as url:
        yield url


@pytest.fixture
def redis_url():
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=5, socket_timeout=5)
    try:
        client.ping()
    except Exception as exc:  # noqa: BLE001
        need_service("Redis at 127.0.0.1:6379", exc)
    finally:
        client.close()
    return REDIS_URL
