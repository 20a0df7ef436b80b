"""Check the external links of the README and the documentation site.

    python scripts/check_links.py [--offline] [--timeout S] [--deadline S] [FILE ...]

Without FILEs: README.md, every page under docs/, the files the pages include
(``--8<-- "CHANGELOG.md"``) and mkdocs.yml's ``site_url``/``repo_url``. Every URL must be
well formed (http or https, a valid host name, no blanks) and on a host in
``ALLOWED_HOSTS`` (a new host is added there on purpose, so a typo cannot slip in);
loopback addresses (``mkdocs serve``'s) are accepted unfetched. Then each URL is
fetched (HEAD, GET when HEAD is refused) when this machine reaches its host; a host
that does not resolve or accept a connection is listed as not checked, with the
reason, and does not fail the run. Exit 1 for a malformed URL, a host not allowed, or a
link the server answers with 404/410 or another error status (except 401/403/429, which
some sites answer to scripts: listed, not failed); a slow server or one not done within
``--deadline`` seconds in all is listed, not failed. Internal links are checked by
``mkdocs build --strict``.
"""

from __future__ import annotations

import argparse
import ipaddress
import re
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]

ALLOWED_HOSTS = frozenset(
    {
        "arxiv.org",
        "docs.rs",
        "ferrograd.github.io",
        "github.com",
        "keepachangelog.com",
        "numpy.org",
        "ossci-datasets.s3.amazonaws.com",
        "pypi.org",
        "semver.org",
        "storage.googleapis.com",
        "www.maturin.rs",
        "www.oreilly.co.jp",
    }
)
"""Hosts the docs may link to."""

LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})
"""Accepted without fetching: addresses on the reader's own machine."""

# A URL runs to a blank, a quote, a bracket or a backtick; trailing punctuation of the
# sentence around it is cut off afterwards.
_URL = re.compile(r"https?://[^\s<>()\[\]{}`\"']+")
_TRAILING = ".,:;!?*_"
_INCLUDE = re.compile(r'^\s*--8<--\s+"([^"]+)"\s*$', re.M)
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$", re.I)
_USER_AGENT = "ferrograd-link-check/1 (+https://github.com/ferrograd/ferrograd)"
_REPORTED = {401, 403, 429}  # answered, but the site turns scripts away: not a verdict


@dataclass(frozen=True)
class Link:
    """One URL and where it was found."""

    url: str
    where: str


@dataclass(frozen=True)
class Result:
    """What the check found for a link: ``status`` is ok, broken, bad or unchecked."""

    link: Link
    status: str
    detail: str


def find_links(text: str, source: str) -> list[Link]:
    """Every http(s) URL in ``text`` (Markdown links, autolinks, bare URLs, code)."""
    links = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        for match in _URL.finditer(line):
            url = match.group().rstrip(_TRAILING)
            links.append(Link(url, f"{source}:{lineno}"))
    return links


def default_files(root: Path = ROOT) -> list[Path]:
    """README.md, the docs pages and the files they include."""
    files = [root / "README.md", *sorted((root / "docs").rglob("*.md"))]
    for page in list(files[1:]):
        for name in _INCLUDE.findall(page.read_text(encoding="utf-8")):
            included = root / name.split(":")[0]  # "README.md:results": a named section
            if included not in files:
                files.append(included)
    return files


def site_links(root: Path = ROOT) -> list[Link]:
    """mkdocs.yml's ``site_url`` and ``repo_url``: every page links there."""
    links = []
    text = (root / "mkdocs.yml").read_text(encoding="utf-8")
    for lineno, line in enumerate(text.splitlines(), start=1):
        m = re.match(r"^(site_url|repo_url):\s*(\S+)\s*$", line)
        if m:
            links.append(Link(m.group(2), f"mkdocs.yml:{lineno}"))
    return links


def form_problem(url: str, allowed: frozenset[str]) -> str | None:
    """Why ``url`` is malformed or not allowed, or None."""
    try:
        parts = urlsplit(url)
        port = parts.port  # ValueError for a port out of range
    except ValueError as exc:
        return f"malformed: {exc}"
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host:
        return "malformed: needs http(s)://host"
    if port is not None and not 0 < port < 65536:
        return f"malformed: port {port}"
    if re.search(r"%(?![0-9A-Fa-f]{2})", url):
        return "malformed: a % that is not a percent-encoding"
    try:
        ipaddress.ip_address(host)
    except ValueError:
        labels = host.split(".")
        if len(labels) < 2 or not all(_LABEL.match(label) for label in labels):
            return f"malformed: {host!r} is not a host name"
    if host not in allowed and host not in LOOPBACK:
        return f"host {host} is not in ALLOWED_HOSTS (scripts/check_links.py)"
    return None


def _reach(host: str, port: int, timeout: float) -> str | None:
    """None when a TCP connection to the host opens, else why not."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except socket.gaierror as exc:
        return f"does not resolve here ({exc.strerror or exc})"
    except OSError as exc:
        return f"no connection from here ({exc.strerror or exc})"


def _fetch(url: str, timeout: float) -> tuple[str, str]:
    """(status, detail) of one URL: HEAD, then GET if HEAD is not answered with 2xx/3xx."""
    last, code = "", 0
    for method in ("HEAD", "GET"):
        request = urllib.request.Request(url, method=method, headers={"User-Agent": _USER_AGENT})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return "ok", f"{response.status} {method}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code} {exc.reason}"
            code = exc.code
        except TimeoutError:
            return "unchecked", f"no answer within {timeout:g} s"
        except urllib.error.URLError as exc:
            return "unchecked", f"no answer ({exc.reason})"
    if code in _REPORTED:
        return "unchecked", f"{last}: the site turns scripts away"
    return "broken", last


def check(
    links: list[Link],
    *,
    allowed: frozenset[str] = ALLOWED_HOSTS,
    offline: bool = False,
    timeout: float = 5.0,
    deadline: float = 20.0,
    skip_hosts: frozenset[str] = LOOPBACK,
) -> list[Result]:
    """One Result per link, in order."""
    results: dict[int, Result] = {}
    todo: dict[str, list[int]] = {}  # host -> indices of its links to fetch
    for i, link in enumerate(links):
        problem = form_problem(link.url, allowed)
        host = (urlsplit(link.url).hostname or "").lower() if problem is None else ""
        if problem is not None:
            results[i] = Result(link, "bad", problem)
        elif host in skip_hosts:
            results[i] = Result(link, "ok", "loopback, not fetched")
        elif offline:
            results[i] = Result(link, "unchecked", "offline")
        else:
            todo.setdefault(host, []).append(i)

    def host_job(host: str, indices: list[int]) -> None:
        first = urlsplit(links[indices[0]].url)
        port = first.port or (443 if first.scheme == "https" else 80)
        why = _reach(host, port, min(timeout, 3.0))
        for i in indices:
            if why is not None:
                results[i] = Result(links[i], "unchecked", f"host {host} {why}")
            else:
                results[i] = Result(links[i], *_fetch(links[i].url, timeout))

    # One daemon thread per host: what is not done by the deadline is abandoned (a pool's
    # workers would be waited for at exit).
    end = time.monotonic() + deadline
    threads = [
        threading.Thread(target=host_job, args=(host, idx), daemon=True)
        for host, idx in todo.items()
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, end - time.monotonic()))
    for i, link in enumerate(links):
        results.setdefault(i, Result(link, "unchecked", f"not done within {deadline:g} s"))
    return [results[i] for i in range(len(links))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="*", type=Path, help="default: README.md and docs/")
    parser.add_argument("--offline", action="store_true", help="check form and hosts only")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per request")
    parser.add_argument("--deadline", type=float, default=20.0, help="seconds in all")
    ns = parser.parse_args(argv)
    links: list[Link] = []
    if ns.files:
        files = ns.files
    else:
        files = default_files()
        links += site_links()
    for path in files:
        name = path.resolve()
        shown = name.relative_to(ROOT) if name.is_relative_to(ROOT) else path
        links += find_links(path.read_text(encoding="utf-8"), str(shown))
    results = check(links, offline=ns.offline, timeout=ns.timeout, deadline=ns.deadline)
    for r in results:
        print(f"{r.status:9} {r.link.url}  ({r.link.where}; {r.detail})")
    counts = {s: sum(r.status == s for r in results) for s in ("ok", "unchecked", "broken", "bad")}
    print(
        f"links: {len(results)} in {len(files)} files; {counts['ok']} ok, "
        f"{counts['unchecked']} not checked (listed above, with the reason), "
        f"{counts['broken']} broken, {counts['bad']} malformed or not allowed"
    )
    return 1 if counts["broken"] or counts["bad"] else 0


if __name__ == "__main__":
    sys.exit(main())
