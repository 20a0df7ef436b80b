"""``python -m ferrograd``: the same command line as the ``ferrograd`` script."""

from __future__ import annotations

import sys

from ferrograd.cli import main

if __name__ == "__main__":
    sys.exit(main())
