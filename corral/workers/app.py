"""Importing the application named by ``module:attribute``."""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path
from typing import cast

from corral.workers.types import ASGIApp


class AppLoadError(Exception):
    """The app could not be imported; the message says why, in one line."""


def load_app(target: str, *, factory: bool = False, app_dir: str = ".") -> ASGIApp:
    """Import ``module:attribute`` (an ASGI 3 app, or with ``factory`` a callable making one).

    The import's own exceptions propagate (their traceback is what a developer needs);
    a target that does not resolve to a usable app raises :class:`AppLoadError`.

    Raises:
        AppLoadError: the module or attribute is missing, or the object is not an app.
    """
    module_name, _, attr_path = target.partition(":")
    path = str(Path(app_dir).resolve())
    if path not in sys.path:
        sys.path.insert(0, path)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not module_name.startswith(exc.name):
            raise  # a module the app itself imports is missing: show the traceback
        raise AppLoadError(f"could not import module {module_name!r} (from {path})") from None
    obj: object = module
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise AppLoadError(f"module {module_name!r} has no attribute {attr_path!r}") from None
    if factory:
        if not callable(obj):
            raise AppLoadError(f"{target} is not callable, so it cannot be a --factory")
        obj = obj()
    if not callable(obj):
        raise AppLoadError(f"{target} is not an ASGI application (not callable)")
    if not _is_asgi3(obj):
        raise AppLoadError(
            f"{target} does not look like an ASGI 3 application "
            "(expected an async callable taking scope, receive, send)"
        )
    return cast("ASGIApp", obj)


def _is_asgi3(obj: object) -> bool:
    if inspect.isclass(obj):
        return False  # an ASGI 2 class (instantiated per scope) or not an app at all
    call = obj if inspect.isroutine(obj) else getattr(obj, "__call__", None)  # noqa: B004
    if call is None:
        return False
    if inspect.iscoroutinefunction(call):
        return True
    try:
        params = inspect.signature(call).parameters
    except (TypeError, ValueError):
        return True  # a builtin or C callable: give it the benefit of the doubt
    # An object whose __call__ is async only after wrapping (functools.partial,
    # middleware classes) still takes three arguments.
    return len([p for p in params.values() if p.default is p.empty]) == 3
