"""corral: a pre-fork ASGI server on h11 and wsproto.

The public API is deliberately small (a test pins it): :func:`run` starts a server
from Python, :class:`Config` describes one, and ``__version__`` names the release.
"""

from __future__ import annotations

from corral.config import Config
from corral.main import run

__version__ = "0.1.0"

__all__ = ["Config", "__version__", "run"]
