"""The master process: a pure state machine (state.py) and the loop that runs it."""

from __future__ import annotations
