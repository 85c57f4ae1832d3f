"""The public API is small and pinned: changing it is a deliberate act."""

from __future__ import annotations

import corral


def test_exports():
    """corral exports run, Config and __version__, and nothing else."""
    assert sorted(corral.__all__) == ["Config", "__version__", "run"]
    assert isinstance(corral.__version__, str)
    assert corral.Config().workers == 1
