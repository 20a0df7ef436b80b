"""mkdocs hook: docstrings write cross-references Sphinx-style (:class:`Trainer`);
render them as the plain code names they wrap."""

from __future__ import annotations

import re
from typing import Any

_ROLE = re.compile(r":(?:class|meth|func|attr|mod|data|exc|obj):(?=<code>)")


def on_page_content(html: str, **_: Any) -> str:
    return _ROLE.sub("", html)
