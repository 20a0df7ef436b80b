"""The Python examples of the README and the documentation run as written, and the
README's type-check under ``mypy --strict`` as a user's code would."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["README.md", "docs/index.md", "docs/tutorial.md"]


def _blocks(page: str) -> list[str]:
    text = (ROOT / page).read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


EXAMPLES = [(page, i, code) for page in PAGES for i, code in enumerate(_blocks(page))]


def test_pages_have_examples():
    assert len(_blocks("README.md")) >= 2
    assert len(_blocks("docs/tutorial.md")) >= 10


@pytest.mark.parametrize(
    ("page", "index", "code"), EXAMPLES, ids=[f"{p}[{i}]" for p, i, _ in EXAMPLES]
)
def test_example_runs(page, index, code, capsys):
    exec(compile(code, f"{page}[python block {index}]", "exec"), {})
    assert capsys.readouterr().out.strip(), "each example prints something a reader can check"


def test_readme_examples_pass_mypy_strict(tmp_path):
    """The installed package's types (py.typed) accept the README's code as written."""
    pytest.importorskip("mypy")
    files = []
    for page in ("README.md", "docs/index.md"):
        for i, code in enumerate(_blocks(page)):
            path = tmp_path / f"{Path(page).stem.lower()}_example_{i}.py"
            path.write_text(code, encoding="utf-8")
            files.append(path.name)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-color-output", *files],
        cwd=tmp_path,  # no project config: the settings a user would have
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert result.returncode == 0, result.stdout + result.stderr
