"""Every use corral makes of a dependency's private API, in one place.

Theory of operation
-------------------
Three fast paths stand beside the libraries that define the protocols, and each
needs something those libraries do not publish. They are reached here and nowhere
else: the rest of corral imports the hooks below, never the private names.

==========================  =========================================  ===================
hook                        reaches into                               used by
==========================  =========================================  ===================
:data:`H11_REQUEST_LINE`    ``h11._abnf.request_line``                 ``request.py``
:func:`between_messages`    wsproto's ``Connection._proto`` decoders   ``websocket.py``
``RustNotify``              ``watchfiles._rust_notify.RustNotify``     ``supervisor/reloader.py``
==========================  =========================================  ===================

Rules:

* Each hook says what it reaches, the versions it was checked against, and what corral
  does when it is missing. A missing hook never changes an answer: the fast path is
  simply not taken (every request head goes through ``h11.Connection``, every frame
  through wsproto), and the reloader polls instead of waiting for events.
* Because the fallback is silent, a test that passes may only mean the fallback ran.
  ``tests/protocol/test_private.py`` therefore checks each hook against the installed
  dependency directly (the attributes and their types, the grammar against h11's own
  parser, RustNotify's signature and a real watch), and the fast paths count what
  they read (``request.PARSE_HEAD_TALLY``, ``HttptoolsHeadReader.heads_read``,
  ``WebSocketCore.simple_frames``) so the tests see them taken.
* pyproject.toml bounds h11, wsproto and watchfiles above (each pin names its hook);
  ``.ci/run`` runs the unit tests on the oldest versions the pins allow.

Not a hook, but relied on in the same way: ``httptools_head.py`` uses only httptools'
public API, yet assumes llhttp is built as strict as h11 in a few places (names are
tokens, targets are VCHAR, an upgrade is not an error).
``tests/protocol/test_request.py::test_the_llhttp_build_is_as_strict_as_assumed`` pins
those, and httptools is bounded above in the speedups and test extras.

``RustNotify`` is read from this module on first use (PEP 562 ``__getattr__``), not at
import: the protocol package is imported by every worker, which never watches files,
and importing watchfiles costs some 20 ms (anyio, multiprocessing). Only the reloader
asks for it.

What this file must not know: what the fast paths do with what it hands them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, cast

if TYPE_CHECKING:
    from watchfiles._rust_notify import RustNotify
    from wsproto.connection import Connection

__all__ = ["H11_REQUEST_LINE", "RustNotify", "between_messages", "rust_notify_class"]

# -- h11 -------------------------------------------------------------------------------

try:  # Checked against h11 0.16.0.
    from h11._abnf import request_line as _request_line
except ImportError:  # pragma: no cover - only with an h11 that moved its grammar
    _request_line = ""

#: h11's regular expression for the request line (RFC 9112 section 3), as the ``str``
#: that ``h11._readers`` compiles, with the groups ``method``, ``target`` and
#: ``http_version``; h11 0.16.0. Empty when h11 no longer has it: ``request.FAST_PATH``
#: is then false and every head is read by ``h11.Connection``, slower but the same.
H11_REQUEST_LINE: Final[str] = _request_line

# -- wsproto ---------------------------------------------------------------------------


def between_messages(conn: Connection) -> bool:
    """True when wsproto holds no byte and no message in progress, so that frames may be
    read without it (``ws_frames.read_simple_frames``) and skipping it changes none of
    its state.

    Reaches into the frame protocol behind a wsproto connection: ``conn._proto``, its
    ``_frame_decoder`` (``buffer``, the unparsed bytes, whose ``len`` is what is
    buffered; ``header``, the header of a frame whose payload is still to come, else
    None) and its ``_message_decoder`` (``opcode``, the opcode of a fragmented message
    in progress, else None). Checked against wsproto 1.2.0 and 1.3.2.

    Fallback: if any of these is gone or renamed it answers False, and every frame goes
    through wsproto, slower but the same.
    """
    try:
        proto = conn._proto
        decoder = proto._frame_decoder
        return (
            decoder.header is None
            and proto._message_decoder.opcode is None
            and not len(decoder.buffer)
        )
    except (AttributeError, TypeError):
        return False


# -- watchfiles ------------------------------------------------------------------------


class _EventsUnavailable:
    """Stands in for RustNotify when watchfiles no longer has it: refuses to start."""

    def __init__(self, *args: object) -> None:
        # The reloader takes a RuntimeError from RustNotify to mean "no file system
        # events here" and polls instead.
        raise RuntimeError(
            "watchfiles._rust_notify.RustNotify is gone (corral/protocol/private.py)"
        )


def rust_notify_class() -> type[RustNotify]:
    """watchfiles' ``RustNotify``, the watcher under ``watchfiles.watch()``.

    Documented in watchfiles' reference ("Rust backend direct usage") yet in a private
    module; unlike ``watch()`` it lets the reloader arm the next watcher before closing
    the current one. Used as ``RustNotify(paths, debug, force_polling, poll_delay_ms,
    recursive, ignore_permission_denied)``, then ``watch(debounce_ms, step_ms,
    timeout_ms, stop_event)`` and ``close()``. Checked against watchfiles 0.21.0 and 1.3.0.

    Fallback: without it a stand-in raises RuntimeError when constructed, and the
    reloader polls (it warns "file system events unavailable").
    """
    try:
        from watchfiles._rust_notify import RustNotify as rust_notify
    except ImportError:  # pragma: no cover - only with a watchfiles that moved it
        return cast("type[RustNotify]", _EventsUnavailable)
    return rust_notify


def __getattr__(name: str) -> object:
    """PEP 562: ``RustNotify`` is looked up on first use (see the module docstring)."""
    if name == "RustNotify":
        return rust_notify_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
