"""Find, read and validate profile files: built-in ones and the user's own.

Why this module exists: the planner and ``pick`` need the model lineages and
hardware profiles as typed records, and a user's typo must say which file,
which key and what was meant. Built-in profiles ship in the package
``portllm_edge_profiles`` (read with :mod:`importlib.resources`); the user's
own live in ``<home>/profiles/models/*.toml`` and ``<home>/profiles/hardware/*.toml``
and replace built-ins of the same name. It must not import torch.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from portllm_edge.catalog.schema import HardwareProfile, ModelFamily, ModelVersion
from portllm_edge.errors import ConfigError

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]


def did_you_mean(word: str, choices: list[str] | set[str] | tuple[str, ...]) -> str | None:
    """Return the closest choice to ``word`` (difflib, case-insensitive), or ``None``."""
    lowered = {c.lower(): c for c in choices}
    hits = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)
    return lowered[hits[0]] if hits else None


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The field names (aliases as written in files) of the sub-model at ``loc``."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        fields = current.model_fields
        name = next((n for n, f in fields.items() if (f.alias or n) == part or n == part), None)
        if name is None:
            return []
        ann = fields[name].annotation
        args = getattr(ann, "__args__", ()) or ()
        nxt = next((a for a in (ann, *args) if isinstance(a, type) and issubclass(a, BaseModel)), None)
        current = nxt
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or n for n, f in current.model_fields.items()]
    return []


def _loc_text(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def validation_to_config_error(exc: ValidationError, model: type[BaseModel], source: str) -> ConfigError:
    """Turn the first pydantic error into a :class:`ConfigError` naming the file and key, with a hint."""
    errors = exc.errors()
    # A typo yields "unknown key" and "missing key"; the unknown one carries the useful hint.
    err = next((e for e in errors if e.get("type") == "extra_forbidden"), errors[0])
    loc = tuple(err.get("loc", ()))
    where = _loc_text(loc) or "(top level)"
    if err.get("type") == "extra_forbidden" and loc:
        key = str(loc[-1])
        known = _fields_at(model, loc[:-1])
        guess = did_you_mean(key, known)
        hint = f"did you mean `{guess}`?" if guess else f"known keys here: {', '.join(sorted(known))}."
        return ConfigError(f"{source}: unknown key `{where}`.", hint=hint)
    if err.get("type") == "missing":
        return ConfigError(
            f"{source}: missing key `{where}`.",
            hint=f"add `{loc[-1]}` (see the built-in profiles for examples).",
        )
    msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    return ConfigError(f"{source}: `{where}`: {msg}.", hint="fix the value in that file.")


def _parse(text: str, model: type[BaseModel], source: str) -> Any:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"{source}: not valid TOML ({exc}).", hint="fix the TOML syntax at that line."
        ) from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_to_config_error(exc, model, source) from None


def load_family_file(path: Path) -> ModelFamily:
    """Read one model lineage file. Raises ConfigError naming the file and key."""
    return _parse(Path(path).read_text(encoding="utf-8"), ModelFamily, str(path))


def load_hardware_file(path: Path) -> HardwareProfile:
    """Read one hardware profile file. Raises ConfigError naming the file and key."""
    return _parse(Path(path).read_text(encoding="utf-8"), HardwareProfile, str(path))


@lru_cache(maxsize=1)
def _builtin() -> tuple[tuple[ModelFamily, ...], tuple[HardwareProfile, ...]]:
    root = resources.files("portllm_edge_profiles")
    fams: list[ModelFamily] = []
    hws: list[HardwareProfile] = []
    for sub, model, out in (("models", ModelFamily, fams), ("hardware", HardwareProfile, hws)):
        folder = root.joinpath(sub)
        if not folder.is_dir():
            continue
        for entry in sorted(folder.iterdir(), key=lambda p: p.name):
            if entry.name.endswith(".toml"):
                out.append(_parse(entry.read_text(encoding="utf-8"), model, f"profiles/{sub}/{entry.name}"))
    return tuple(fams), tuple(hws)


@dataclass(frozen=True)
class Catalog:
    """All known model families and hardware profiles (built-in plus the user's).

    Attributes:
        families: Family name -> lineage.
        hardware: Profile name -> hardware profile.
    """

    families: dict[str, ModelFamily]
    hardware: dict[str, HardwareProfile]

    def versions(self) -> list[tuple[ModelFamily, ModelVersion]]:
        """Every (family, version) pair, families in name order."""
        return [(f, v) for _, f in sorted(self.families.items()) for v in f.versions]

    def find_version(self, name: str) -> tuple[ModelFamily, ModelVersion] | None:
        """Find a version by name or hub id, case-insensitively; ``None`` if unknown."""
        key = name.strip().lower()
        for fam, ver in self.versions():
            if key in {ver.name.lower(), (ver.hf_id or "").lower()}:
                return fam, ver
        return None

    def version_names(self) -> list[str]:
        return [v.name for _, v in self.versions()]

    def hardware_profile(self, name: str) -> HardwareProfile:
        """Return the named hardware profile.

        Raises:
            ConfigError: Unknown name, with the closest known name as the hint.
        """
        key = name.strip().lower()
        for hw_name, hw in self.hardware.items():
            if hw_name.lower() == key:
                return hw
        guess = did_you_mean(name, list(self.hardware))
        hint = f"did you mean `{guess}`?" if guess else "run `portllm-edge profiles list` to see the names."
        raise ConfigError(f"unknown hardware profile {name!r}.", hint=hint)


def load_catalog(user_dir: Path | None = None) -> Catalog:
    """Load built-in profiles, then the user's (which replace built-ins of the same name).

    Args:
        user_dir: The user's profile folder; default :func:`portllm_edge.paths.user_profiles_dir`.

    Raises:
        ConfigError: A profile file is invalid (names the file, key and fix).
    """
    from portllm_edge import paths

    fams, hws = _builtin()
    families = {f.family: f for f in fams}
    hardware = {h.name: h for h in hws}
    udir = paths.user_profiles_dir() if user_dir is None else Path(user_dir)
    if (udir / "models").is_dir():
        for p in sorted((udir / "models").glob("*.toml")):
            fam = load_family_file(p)
            families[fam.family] = fam
    if (udir / "hardware").is_dir():
        for p in sorted((udir / "hardware").glob("*.toml")):
            hw = load_hardware_file(p)
            hardware[hw.name] = hw
    return Catalog(families=families, hardware=hardware)
