"""One root error type for everything portllm-edge raises on purpose.

Why this module exists: the CLI and the TUI must tell a user *what* failed,
*where* (file, tensor, field) and *how to fix it*, without a traceback. Every
expected failure is a :class:`PortllmError` subclass that carries those three
parts. Each area's class also inherits the matching built-in (``ValueError``
for bad input, ``RuntimeError`` for a failed operation), as peft's errors do, so a
caller's ``except ValueError`` keeps working. The CLI prints ``error: <message>`` (plus ``fix: <hint>``) to stderr and
exits with code 2; the TUI shows ``notify(severity="error", title=...)``.

It must not import torch, transformers or any UI code.
"""

from __future__ import annotations

EXIT_USAGE = 2
"""Exit code for every expected error (bad input, failed check, no fit)."""


class PortllmError(Exception):
    """Root of all expected portllm-edge errors.

    Args:
        message: One line saying what failed and where (file, tensor, field).
        hint: One line saying how to fix it, or ``None``.
        title: Short heading for UI notifications.
    """

    title = "portllm-edge error"

    def __init__(self, message: str, *, hint: str | None = None, title: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if title is not None:
            self.title = title

    def one_line(self) -> str:
        """Return ``message`` and the hint joined on one line, for CLI output (``<message>. Fix: <hint>``)."""
        if self.hint:
            return f"{sentence(self.message)} Fix: {self.hint}"
        return self.message


def sentence(text: str) -> str:
    """``text`` ending with a full stop (unless it already ends with ``.``, ``!``, ``?`` or ``:``)."""
    text = text.rstrip()
    return text if not text or text.endswith((".", "!", "?", ":")) else text + "."


class ConfigError(PortllmError, ValueError):
    """A profile, config file or option value is invalid."""

    title = "Invalid configuration"


class HardwareError(PortllmError, RuntimeError):
    """Probing the machine failed in a way the user must act on."""

    title = "Hardware probe"


class PlanningError(PortllmError, ValueError):
    """No precision or model fits the memory budget, or a config can't be sized."""

    title = "Memory planning"


class PatchError(PortllmError, ValueError):
    """A patch (LoRA adapter folder) is missing files, corrupt or inconsistent."""

    title = "Invalid patch"


class StoreError(PortllmError, RuntimeError):
    """The patch or model store refused an operation (exists, locked, unknown name)."""

    title = "Store"


class BaseModelError(PortllmError, ValueError):
    """A base model reference can't be resolved or loaded safely."""

    title = "Base model"


class CompatibilityError(PortllmError, ValueError):
    """The preflight found that a patch does not fit a base model."""

    title = "Incompatible patch"


class PortingError(PortllmError, RuntimeError):
    """Attaching or merging a patch failed its post-conditions (unmatched tensors, NaN, no effect)."""

    title = "Porting"


class ExportError(PortllmError, ValueError):
    """A patch cannot be exported for a serving runtime (vLLM, llama.cpp) as asked."""

    title = "Export"


class TrainingError(PortllmError, RuntimeError):
    """A LoRA fine-tune or continued-pretraining run could not start or diverged."""

    title = "Training"


class DataError(PortllmError, ValueError):
    """A task or corpus file has the wrong format, columns or labels."""

    title = "Data"


class EvaluationError(PortllmError, RuntimeError):
    """An evaluation could not run."""

    title = "Evaluation"


class MeasurementError(PortllmError, RuntimeError):
    """An isolated measurement subprocess failed."""

    title = "Measurement"
