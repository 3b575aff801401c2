"""Each package exports exactly its `__all__`: every public name it binds is listed, and every listed name exists.

Packages are found by walking src/expeditor, so a new one is covered without editing this file.
"""

from __future__ import annotations

import importlib
import types
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[2] / "src" / "expeditor"
ROOT = PACKAGE_DIR.name


def package_names(package_dir: Path) -> list[str]:
    """Every package under `package_dir`, itself included, as dotted names."""
    found = [
        ".".join((package_dir.name, *init.parent.relative_to(package_dir).parts))
        for init in package_dir.rglob("__init__.py")
    ]
    return sorted(found)


def public_names(module: types.ModuleType) -> set[str]:
    """Names bound in the package that do not start with `_`, less its own submodules and `annotations`."""
    names: set[str] = set()
    for name, value in vars(module).items():
        # `annotations` here is the same __future__ feature object a package's own future import binds.
        if name.startswith("_") or value is annotations:
            continue
        if isinstance(value, types.ModuleType) and value.__name__.startswith(module.__name__ + "."):
            continue
        names.add(name)
    return names


def exported(module: types.ModuleType) -> list[str]:
    listed = getattr(module, "__all__", None)
    assert isinstance(listed, list | tuple), f"{module.__name__} has no __all__ list"
    return [str(name) for name in listed]


PACKAGES = package_names(PACKAGE_DIR)
SUBPACKAGES = [name for name in PACKAGES if name != ROOT]


def test_the_walk_finds_every_package() -> None:
    expected = {"executor", "monitor", "recipes", "reports", "runs", "server", "state", "testing", "usage"}
    assert {f"{ROOT}.{name}" for name in expected} <= set(SUBPACKAGES)
    assert ROOT in PACKAGES


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_a_package_exports_exactly_its_public_names(name: str) -> None:
    module = importlib.import_module(name)
    listed = exported(module)
    assert len(listed) == len(set(listed)), f"{name}.__all__ lists a name twice"
    public = public_names(module)
    extra, missing = sorted(set(listed) - public), sorted(public - set(listed))
    assert (extra, missing) == ([], []), (
        f"{name}.__all__ differs from the package's public names: "
        f"listed but not bound {extra}, bound but not listed {missing}"
    )


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_every_name_a_package_exports_resolves(name: str) -> None:
    module = importlib.import_module(name)
    unresolved = [listed for listed in exported(module) if not hasattr(module, listed)]
    assert not unresolved, f"{name}.__all__ names what it does not have: {unresolved}"


def test_every_name_the_root_exports_resolves_through_its_lazy_getattr() -> None:
    # The root binds its exports lazily (the fake agent must start fast), so its namespace is not compared.
    module = importlib.import_module(ROOT)
    unresolved: list[str] = []
    for listed in exported(module):
        try:
            getattr(module, listed)
        except AttributeError:
            unresolved.append(listed)
    assert not unresolved, f"{ROOT}.__all__ names what it does not have: {unresolved}"
    with pytest.raises(AttributeError, match="no attribute 'not_exported'"):
        getattr(module, "not_exported")  # noqa: B009
