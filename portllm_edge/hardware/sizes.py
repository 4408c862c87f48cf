"""Human-readable memory sizes: parse ``"8GiB"``, ``"12GB"``, ``"512MiB"``; print binary units.

Why this module exists: every budget, profile and CLI option speaks in sizes, and
every number inside portllm-edge is an ``int`` of bytes. This is the only place
that converts between the two (shaped after nvitop's ``human2bytes`` /
``bytes2human``). It must not import torch or anything heavy.

Units: ``KiB/MiB/GiB/TiB`` (and the bare ``K/M/G/T`` docker-style shorthands) are
powers of 1024; ``KB/MB/GB/TB`` are powers of 1000, as in SI. A bare number is bytes.
"""

from __future__ import annotations

import re

from portllm_edge.errors import ConfigError

_UNITS: dict[str, int] = {
    "": 1,
    "b": 1,
    "k": 1024,
    "m": 1024**2,
    "g": 1024**3,
    "t": 1024**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
}
_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([a-zA-Z]*)\s*$")


def parse_size(value: str | int | float, *, field: str = "size") -> int:
    """Parse a human size into bytes.

    Args:
        value: ``"8GiB"``, ``"12GB"``, ``"512MiB"``, ``"1.5G"``, ``"4096"`` or a number of bytes.
        field: Name used in the error message (an option or profile key).

    Returns:
        The size in bytes (``int``, rounded down).

    Raises:
        ConfigError: The text is not a size, or the size is negative.
    """
    if isinstance(value, bool):
        raise ConfigError(
            f"`{field}`: expected a size like '8GiB', got {value!r}.",
            hint="Write a size such as 8GiB, 12GB or 512MiB.",
        )
    if isinstance(value, (int, float)):
        if value < 0:
            raise ConfigError(
                f"`{field}`: size must not be negative, got {value!r}.", hint="Use a size of 0 bytes or more."
            )
        return int(value)
    text = str(value).strip()
    if text.startswith("-"):
        raise ConfigError(
            f"`{field}`: size must not be negative, got {value!r}.", hint="Use a size of 0 bytes or more."
        )
    match = _SIZE_RE.match(text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNITS:
        raise ConfigError(
            f"`{field}`: can't read {value!r} as a size.",
            hint="Write a number with a unit: 8GiB, 12GB, 512MiB (KiB/MiB/GiB = 1024-based, KB/MB/GB = 1000-based).",
        )
    return int(float(match.group(1)) * _UNITS[unit])


def format_size(num_bytes: int | float | None, *, precision: int = 2) -> str:
    """Format bytes in binary units (``"7.45 GiB"``); ``None`` prints ``"n/a"``.

    Args:
        num_bytes: A size in bytes, or ``None`` when not available.
        precision: Digits after the decimal point for KiB and above.
    """
    if num_bytes is None:
        return "n/a"
    sign = "-" if num_bytes < 0 else ""
    size = float(abs(num_bytes))
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024.0:
            return f"{sign}{int(size)} B" if unit == "B" else f"{sign}{size:.{precision}f} {unit}"
        size /= 1024.0
    return f"{sign}{size:.{precision}f} TiB"
