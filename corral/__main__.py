"""``python -m corral``: the same entry point as the ``corral`` console script."""

from __future__ import annotations

from corral.cli import main

if __name__ == "__main__":
    main()
