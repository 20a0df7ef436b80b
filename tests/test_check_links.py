"""scripts/check_links.py: URLs found, judged by form and host, fetched against a local
server (200, 404, 405 then 200, 403, too slow), unreachable hosts listed not failed."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("check_links", ROOT / "scripts/check_links.py")
assert _spec is not None and _spec.loader is not None
links = importlib.util.module_from_spec(_spec)
sys.modules["check_links"] = links  # dataclasses look their module up by name
_spec.loader.exec_module(links)


def test_find_links_in_markdown_and_code():
    text = (
        "See [the book](https://github.com/oreilly-japan/deep-learning-from-scratch).\n"
        "<https://semver.org/>, or https://pypi.org/project/ferrograd/: bare.\n"
        "```bash\ngit clone https://github.com/x/y.git  # in code\n```\n"
        "(http://127.0.0.1:8000, local)\n"
    )
    found = [(lk.url, lk.where) for lk in links.find_links(text, "page.md")]
    assert found == [
        ("https://github.com/oreilly-japan/deep-learning-from-scratch", "page.md:1"),
        ("https://semver.org/", "page.md:2"),
        ("https://pypi.org/project/ferrograd/", "page.md:2"),
        ("https://github.com/x/y.git", "page.md:4"),
        ("http://127.0.0.1:8000", "page.md:6"),
    ]


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://github.com/ferrograd/ferrograd", None),
        ("http://127.0.0.1:8000", None),
        ("https://githb.com/ferrograd", "githb.com is not in ALLOWED_HOSTS"),
        ("ftp://github.com/x", "needs http(s)://host"),
        ("https:///path", "needs http(s)://host"),
        ("https://github.com:99999/x", "malformed"),
        ("https://-github.com/x", "is not a host name"),
        ("https://github/x", "is not a host name"),
        ("https://github.com/a%zzb", "percent-encoding"),
    ],
)
def test_form_and_host(url, problem):
    found = links.form_problem(url, links.ALLOWED_HOSTS)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


class _Handler(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        path = self.path
        if path == "/slow":
            time.sleep(3)
        if path == "/no-head" and self.command == "HEAD":
            self.send_error(405)
        elif path in ("/ok", "/no-head", "/slow"):
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/forbidden":
            self.send_error(403)
        else:
            self.send_error(404)

    do_HEAD = _answer
    do_GET = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def _check(urls, **kwargs):
    found = [links.Link(u, f"t:{i}") for i, u in enumerate(urls)]
    return [(r.status, r.detail) for r in links.check(found, skip_hosts=frozenset(), **kwargs)]


def test_fetch_statuses(server):
    got = _check([f"{server}/ok", f"{server}/missing", f"{server}/no-head", f"{server}/forbidden"])
    assert got[0] == ("ok", "200 HEAD")
    assert got[1][0] == "broken" and "HTTP 404" in got[1][1]
    assert got[2] == ("ok", "200 GET")  # HEAD refused (405), GET answered
    assert got[3][0] == "unchecked" and "HTTP 403" in got[3][1]


def test_slow_server_and_deadline_are_listed_not_failed(server):
    ((status, detail),) = _check([f"{server}/slow"], timeout=0.5)
    assert status == "unchecked" and "no answer" in detail
    start = time.monotonic()
    ((status, detail),) = _check([f"{server}/slow"], timeout=10, deadline=0.5)
    assert status == "unchecked" and "not done within 0.5 s" in detail
    assert time.monotonic() - start < 2.5


def test_unreachable_host_is_listed_not_failed():
    # .invalid never resolves (RFC 2606)
    ((status, detail),) = _check(
        ["https://docs.example.invalid/page"], allowed=frozenset({"docs.example.invalid"})
    )
    assert status == "unchecked" and "does not resolve" in detail


def test_loopback_is_not_fetched():
    found = links.check([links.Link("http://127.0.0.1:9/never", "t:1")])
    assert [(r.status, r.detail) for r in found] == [("ok", "loopback, not fetched")]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts/check_links.py"), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_fails_on_a_host_not_allowed(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("[typo](https://githb.com/ferrograd/ferrograd)\n", encoding="utf-8")
    result = _run("--offline", str(page))
    assert result.returncode == 1
    assert "githb.com is not in ALLOWED_HOSTS" in result.stdout
    assert "0 broken, 1 malformed or not allowed" in result.stdout


def test_the_docs_links_are_well_formed_and_allowed():
    """The README, the docs pages, their includes and mkdocs.yml (form and host only:
    the fetch needs the network, and CI's docs step does it)."""
    result = _run("--offline")
    assert result.returncode == 0, result.stdout
    assert "github.com/ferrograd/ferrograd" in result.stdout  # mkdocs.yml's repo_url
    assert "CHANGELOG.md:" in result.stdout  # included by docs/changelog.md
