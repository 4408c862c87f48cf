"""The one choke point through which every NVML call goes.

Why this module exists: NVML (nvidia-ml-py, imported as ``pynvml``) can be
missing, find no driver, be half-supported (Jetson, some MIG fields, vGPU) or
raise ``NVMLError_NotSupported`` for a single field. Shaped after nvitop's
``libnvml``: :func:`nvml_query` initializes the library lazily on first use,
turns every failure into a typed :class:`NotAvailable` value and logs a
function the installed library lacks once. Callers never import ``pynvml``
themselves, and tests fake NVML here and nowhere else (by replacing
:func:`_load_library` and calling :func:`reset`).

It must not import torch, and it never raises for a missing library, driver
or field.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from types import ModuleType
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NotAvailable:
    """A reading NVML could not give, with the reason (shown as ``n/a``).

    Attributes:
        reason: Why, e.g. ``"NVML library not found"`` or ``"not supported"``.
        not_supported: True when NVML answered ``NVMLError_NotSupported`` for this
            field (what unified-memory boards answer for memory info).
    """

    reason: str
    not_supported: bool = False

    def __bool__(self) -> bool:
        return False

    def __str__(self) -> str:
        return "n/a"


_lock = threading.RLock()
_library: ModuleType | None = None
_init_error: NotAvailable | None = None
_initialized = False
_unknown_logged: set[str] = set()


def _load_library() -> ModuleType:
    """Import the NVML bindings (``pynvml`` from nvidia-ml-py). Tests replace this function."""
    import pynvml

    return pynvml


def reset() -> None:
    """Shut NVML down (if it was started) and forget the cached state; the next query re-initializes."""
    global _library, _init_error, _initialized
    with _lock:
        if _initialized and _library is not None:
            try:
                _library.nvmlShutdown()
            except Exception:
                pass
        _library = None
        _init_error = None
        _initialized = False
        _unknown_logged.clear()


def _ensure_initialized() -> ModuleType | NotAvailable:
    global _library, _init_error, _initialized
    with _lock:
        if _initialized and _library is not None:
            return _library
        if _init_error is not None:
            return _init_error
        try:
            lib = _load_library()
        except ImportError as exc:
            _init_error = NotAvailable(f"nvidia-ml-py not installed ({exc})")
            return _init_error
        try:
            lib.nvmlInit()
        except Exception as exc:
            _init_error = NotAvailable(f"NVML unavailable: {_describe(exc)}")
            log.debug("NVML init failed: %s", exc)
            return _init_error
        _library = lib
        _initialized = True
        return lib


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return text or type(exc).__name__


def _is_not_supported(lib: ModuleType, exc: BaseException) -> bool:
    cls = getattr(lib, "NVMLError_NotSupported", None)
    if isinstance(cls, type) and isinstance(exc, cls):
        return True
    value = getattr(exc, "value", None)
    return value is not None and value == getattr(lib, "NVML_ERROR_NOT_SUPPORTED", object())


def _is_function_not_found(lib: ModuleType, exc: BaseException) -> bool:
    cls = getattr(lib, "NVMLError_FunctionNotFound", None)
    return isinstance(cls, type) and isinstance(exc, cls)


def nvml_available() -> NotAvailable | None:
    """Return ``None`` when NVML initializes, else the :class:`NotAvailable` saying why."""
    state = _ensure_initialized()
    return state if isinstance(state, NotAvailable) else None


def nvml_query(fn_name: str, *args: Any, **kwargs: Any) -> Any:
    """Call ``pynvml.<fn_name>(*args, **kwargs)``; never raises for NVML failures.

    Args:
        fn_name: Name of an NVML binding function, e.g. ``"nvmlDeviceGetMemoryInfo"``.
        *args: Positional arguments (device handles, indices).
        **kwargs: Keyword arguments passed through.

    Returns:
        The function's return value, with ``bytes`` decoded to ``str``; or a
        :class:`NotAvailable` when the library, driver, function or field is
        missing. A function the installed bindings lack is logged once.
    """
    lib = _ensure_initialized()
    if isinstance(lib, NotAvailable):
        return lib
    fn = getattr(lib, fn_name, None)
    if fn is None:
        with _lock:
            if fn_name not in _unknown_logged:
                _unknown_logged.add(fn_name)
                log.warning("NVML function %s is not in the installed bindings; treating it as n/a.", fn_name)
        return NotAvailable(f"{fn_name} not in the NVML bindings")
    try:
        result = fn(*args, **kwargs)
    except Exception as exc:
        if _is_function_not_found(lib, exc):
            with _lock:
                if fn_name not in _unknown_logged:
                    _unknown_logged.add(fn_name)
                    log.warning("NVML function %s is not in the driver library; treating it as n/a.", fn_name)
            return NotAvailable(f"{fn_name} not in the driver's NVML")
        if _is_not_supported(lib, exc):
            return NotAvailable(f"{fn_name}: not supported", not_supported=True)
        return NotAvailable(f"{fn_name}: {_describe(exc)}")
    if isinstance(result, bytes):
        return result.decode("utf-8", errors="replace")
    return result
