"""The wheel a user installs: it carries the licence and the metadata, and works without any extra."""

from __future__ import annotations

import email
import os
import subprocess
import sys
import zipfile
from email.message import Message
from pathlib import Path

import pytest

import expeditor

REPOSITORY = Path(__file__).resolve().parents[2]


def _run(argv: list[str], *, cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    # Without our own settings: the installed copy must work from its defaults, as a user's would.
    env = {key: value for key, value in os.environ.items() if not key.startswith(("EXPEDITOR_", "PYTHON"))}
    return subprocess.run(
        argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built by pip as a user's ``pip install .`` would build it."""
    out = tmp_path_factory.mktemp("wheel")
    built = _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(out), str(REPOSITORY)],
        cwd=out,
        timeout=300,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (found,) = out.glob("expeditor-*.whl")
    return found


def _metadata(wheel: Path) -> tuple[list[str], Message]:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (metadata_name,) = [name for name in names if name.endswith(".dist-info/METADATA")]
        return names, email.message_from_bytes(archive.read(metadata_name))


def test_the_wheel_carries_the_license_the_version_and_extras_that_keep_linters_out(wheel: Path) -> None:
    names, metadata = _metadata(wheel)
    licenses = [name for name in names if name.endswith(".dist-info/licenses/LICENSE")]
    assert len(licenses) == 1
    with zipfile.ZipFile(wheel) as archive:
        assert archive.read(licenses[0]) == (REPOSITORY / "LICENSE").read_bytes()
    assert metadata["Version"] == expeditor.__version__
    assert metadata["License-Expression"] == "MIT"
    assert "Programming Language :: Python :: 3.11" in metadata.get_all("Classifier", [])
    requirements = metadata.get_all("Requires-Dist", [])
    test_extra = [req for req in requirements if req.endswith("extra == 'test'")]
    dev_extra = [req for req in requirements if req.endswith("extra == 'dev'")]
    assert any(req.startswith("pytest") for req in test_extra)
    assert not any(req.startswith(("ruff", "pyright")) for req in test_extra)
    assert {"ruff", "pyright"} <= {req.split(">")[0].split("=")[0].strip() for req in dev_extra}
    # What every user installs: the runtime dependencies only.
    assert not any(
        req.startswith(("pytest", "hypothesis", "ruff", "pyright")) and "extra ==" not in req for req in requirements
    )


@pytest.mark.slow
def test_the_wheel_installed_without_extras_in_a_fresh_venv_runs_the_demo(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    # No pip of its own (our pip installs into it): only what the wheel requires lands there.
    created = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path, timeout=120)
    assert created.returncode == 0, created.stderr
    python = venv / "bin" / "python"
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-compile", str(wheel)]
    installed = _run(install, cwd=tmp_path, timeout=600)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    # No extra came along: the test tools are not there.
    assert _run([str(python), "-c", "import pytest"], cwd=tmp_path, timeout=60).returncode == 1
    version = _run([str(venv / "bin" / "expeditor"), "--version"], cwd=tmp_path, timeout=60)
    assert version.stdout.strip() == f"expeditor {expeditor.__version__}"
    # From a directory outside the checkout, so nothing can come from the source tree.
    demo = _run([str(venv / "bin" / "expeditor"), "demo"], cwd=tmp_path, timeout=300)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "Some outcomes did not happen" not in demo.stdout
