"""Every command is installed, answers --help and --version, and is reachable three ways:
``mpiml-<command>``, ``python -m mpiml <command>`` and ``python -m mpiml.<command>``."""

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from launch import ROOT, single_thread_env

import mpiml
from mpiml.cli import COMMANDS

BIN = Path(sys.executable).parent


def run(*argv):
    return subprocess.run(list(argv), capture_output=True, text=True, env=single_thread_env(),
                          cwd=ROOT, timeout=120)


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("way", ["console script", "python -m mpiml", "python -m mpiml.X"])
def test_every_command_answers_version_and_help(command, way):
    prefix = {"console script": [str(BIN / f"mpiml-{command}")],
              "python -m mpiml": [sys.executable, "-m", "mpiml", command],
              "python -m mpiml.X": [sys.executable, "-m", f"mpiml.{command}"]}[way]
    version = run(*prefix, "--version")
    assert version.returncode == 0 and version.stdout == f"mpiml {mpiml.__version__}\n", version
    shown = run(*prefix, "--help")
    assert shown.returncode == 0 and "usage:" in shown.stdout and "--version" in shown.stdout


def test_python_m_mpiml_lists_the_commands_and_refuses_others():
    listed = run(sys.executable, "-m", "mpiml", "--help")
    assert listed.returncode == 0 and all(name in listed.stdout for name in COMMANDS)
    wrong = run(sys.executable, "-m", "mpiml", "trian")
    assert wrong.returncode == 2 and "unknown command 'trian'" in wrong.stderr
    assert run(sys.executable, "-m", "mpiml").returncode == 2


def test_the_installed_metadata_names_the_license_and_the_commands():
    meta = metadata.metadata("mpiml")
    assert meta["License"] == "BSD-3-Clause" and (ROOT / "LICENSE").exists()
    scripts = {entry.name for entry in metadata.entry_points(group="console_scripts")
               if entry.value.startswith("mpiml.")}
    assert scripts == {f"mpiml-{name}" for name in COMMANDS}
    extras = meta.get_all("Provides-Extra")
    assert "sklearn" in extras and "plot" in extras


def test_no_doc_tells_users_to_install_mpiml_from_the_package_index():
    """mpiml is not on the package index: `pip install 'mpiml[plot]'` fails, or installs a
    look-alike."""
    texts = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
             *sorted((ROOT / "mpiml").rglob("*.py"))]
    offending = [str(path) for path in texts if "install 'mpiml[" in path.read_text()
                 or "install mpiml[" in path.read_text() or "install mpiml\n" in path.read_text()]
    assert not offending, offending
