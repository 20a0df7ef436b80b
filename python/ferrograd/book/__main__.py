"""``python -m ferrograd.book run ch06/optimizer_compare_mnist.py``: the book's scripts."""

import sys

from ferrograd.book import main

if __name__ == "__main__":
    sys.exit(main())
