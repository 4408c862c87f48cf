"""A non-editable ``pip install .`` must ship every package, the TUI and the profiles."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _declared() -> tuple[set[str], dict[str, str], dict[str, list[str]]]:
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    return set(cfg["packages"]), cfg["package-dir"], cfg["package-data"]


def test_every_source_package_is_declared():
    packages, package_dir, _ = _declared()
    roots = {src: name for name, src in package_dir.items()}  # "tui" -> "portllm_edge_tui"
    found = set()
    for init in REPO.glob("**/__init__.py"):
        rel = init.parent.relative_to(REPO)
        top = rel.parts[0]
        if top == "portllm_edge":
            found.add(".".join(rel.parts))
        elif top in roots:
            found.add(".".join((roots[top], *rel.parts[1:])))
    assert found, "no packages found"
    assert found <= packages, f"packages missing from pyproject.toml: {sorted(found - packages)}"


def test_tui_is_installed_under_its_own_name_and_profiles_ship_as_data():
    packages, package_dir, package_data = _declared()
    assert "tui" not in packages and package_dir["portllm_edge_tui"] == "tui"
    assert package_dir["portllm_edge_profiles"] == "profiles"
    shipped = {p.relative_to(REPO / "profiles").as_posix() for p in (REPO / "profiles").glob("*/*.toml")}
    patterns = package_data["portllm_edge_profiles"]
    assert shipped and all(any(Path(s).match(pat) for pat in patterns) for s in shipped)
    assert any(p.endswith(".tcss") for p in package_data["portllm_edge_tui"])
