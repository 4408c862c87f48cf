"""Where portllm-edge keeps its local, offline state.

Everything lives under one *home* folder: the user's data folder from
platformdirs, overridden by the ``PORTLLM_EDGE_HOME`` environment variable or the
CLI's ``--home`` flag. Layout::

    <home>/patches/<name>/     stored patches (see portllm_edge.patches)
    <home>/models/<name>/      imported base models (safetensors folders)
    <home>/runs.sqlite         run history (every run's record; see portllm_edge.history)
    <home>/profiles/           the user's own model/hardware profiles (config)

This module must not import torch.
"""

from __future__ import annotations

import os
from pathlib import Path

ENV_HOME = "PORTLLM_EDGE_HOME"

_override: Path | None = None


def _checked_home(raw: str | os.PathLike[str], source: str) -> Path:
    """``raw`` as an absolute folder path; refuse an empty value or an existing non-folder.

    An empty ``--home ''`` would otherwise resolve to the current directory and scatter the
    store there; a file would make every read say "nothing stored" instead of failing.
    """
    from portllm_edge.errors import ConfigError

    if not str(raw).strip():
        raise ConfigError(
            f"{source} is empty; it must name the data folder.",
            hint=f"pass a folder path to {source}, or leave it out to use the default data folder",
        )
    path = Path(raw).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise ConfigError(
            f"{source} {path}: is a file, not a folder.",
            hint=f"point {source} at a folder (it is created if missing)",
        )
    return path


def set_home(path: str | os.PathLike[str] | None) -> None:
    """Override the home folder for this process (the CLI's ``--home``).

    Raises:
        ConfigError: ``path`` is empty or names an existing file.
    """
    global _override
    _override = _checked_home(path, "--home") if path is not None else None


def home() -> Path:
    """Return the home folder (not created here).

    Order: :func:`set_home`, then ``$PORTLLM_EDGE_HOME``, then
    ``platformdirs.user_data_dir("portllm-edge")``.
    """
    if _override is not None:
        return _override
    env = os.environ.get(ENV_HOME)
    if env:
        return _checked_home(env, f"${ENV_HOME}")
    import platformdirs

    return Path(platformdirs.user_data_dir("portllm-edge", appauthor=False))


def patches_dir() -> Path:
    """Folder of the patch store."""
    return home() / "patches"


def models_dir() -> Path:
    """Folder of the local model store (imported GGUF and local folders)."""
    return home() / "models"


def runs_db() -> Path:
    """The SQLite run-history database."""
    return home() / "runs.sqlite"


def user_profiles_dir() -> Path:
    """Folder of the user's own model and hardware profiles."""
    return home() / "profiles"


def cache_dir() -> Path:
    """Folder for reusable artifacts (demo models, datasets made by the project)."""
    return home() / "cache"
