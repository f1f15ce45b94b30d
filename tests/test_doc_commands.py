"""Every shell block in README.md and docs/*.md runs, or says right above it why it cannot run here.

A fenced ```bash / ```sh / ```shell / ```console block is run for real by bash (``-e -o
pipefail``; a ```console block: its ``$ `` lines) with the venv's bin directory first on PATH, so
``python``, ``mpiexec`` and ``mpiml-train`` are this checkout's. Each document's blocks run in
order in one temporary directory of its own (a later block may use a file an earlier one made),
which holds what a checkout has after ``make demo``: ``configs/``, ``scripts/``, a link to
``.venv`` and ``data/quickstart.h5``. Nothing is written into the checkout.

A block that cannot run here (it needs Slurm, Open MPI with ULFM, root, a file of the user's own,
or it is ``make test`` itself) has the marker on the line right above its fence::

    <!-- not run by the tests: needs a Slurm cluster -->

with a reason that is not empty.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from launch import ROOT, run, single_thread_env

BIN = Path(sys.executable).parent
SHELL_LANGUAGES = {"bash", "sh", "shell", "console"}
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>```+|~~~+)\s*(?P<lang>[\w+-]*)")
MARKER = re.compile(r"^\s*<!--\s*not run by the tests:(?P<reason>.*?)-->\s*$")
BLOCK_TIMEOUT = 120  # seconds; a block that takes longer is killed with its process group


@dataclass
class Block:
    page: Path
    line: int  # of the opening fence, from 1
    language: str
    text: str
    above: int | None  # the index of the nearest non-blank line above the fence
    above_text: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"

    @property
    def reason(self) -> str | None:
        """The marker's reason ('' when it has none), or None without a marker."""
        found = MARKER.match(self.above_text)
        return found["reason"].strip() if found else None

    def script(self) -> str:
        if self.language != "console":
            return self.text
        return "\n".join(line.lstrip()[2:] for line in self.text.splitlines()
                         if line.lstrip().startswith("$ "))


def pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def shell_blocks(page: Path) -> list[Block]:
    """The fenced shell blocks of one Markdown file, with the line above each one's fence."""
    lines = page.read_text().splitlines()
    blocks, index = [], 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        end = index + 1
        while end < len(lines) and not (
                lines[end].strip().startswith(opening["fence"])
                and not lines[end].strip().lstrip(opening["fence"][0])):
            end += 1
        language = opening["lang"].lower()
        if language in SHELL_LANGUAGES:
            above = next((k for k in range(index - 1, -1, -1) if lines[k].strip()), None)
            indent = len(opening["indent"])
            text = "\n".join(line[indent:] if line[:indent].isspace() else line.lstrip()
                             for line in lines[index + 1:end])
            blocks.append(Block(page, index + 1, language, text + "\n", above,
                                "" if above is None else lines[above]))
        index = end + 1
    return blocks


def runnable(page: Path) -> list[Block]:
    return [block for block in shell_blocks(page) if block.reason is None]


def test_the_docs_have_shell_blocks_and_each_marker_gives_a_reason():
    blocks = [block for page in pages() for block in shell_blocks(page)]
    assert len(blocks) > 10, f"only {len(blocks)} shell blocks found: is the parser broken?"
    without_reason = [block.where for block in blocks
                      if block.reason is not None and not block.reason]
    assert not without_reason, f"`not run by the tests:` needs a reason: {without_reason}"
    stray = []
    for page in pages():
        used = {block.above for block in shell_blocks(page)}
        stray += [f"{page.relative_to(ROOT)}:{index + 1}"
                  for index, line in enumerate(page.read_text().splitlines())
                  if MARKER.match(line) and index not in used]
    assert not stray, f"a `not run by the tests` marker not right above a shell block: {stray}"


def doc_env() -> dict[str, str]:
    env = single_thread_env()
    for name in [name for name in env if name.startswith("MPIML_")]:
        del env[name]  # e.g. an MPIML_FAULT of the outer shell
    env.pop("PYTHONPATH", None)
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", VIRTUAL_ENV=str(BIN.parent),
               MPLBACKEND="Agg")
    return env


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory) -> Path:
    """data/quickstart.h5 as `make demo` makes it: the `# Data:` command of its config."""
    from mpiml import config

    where = tmp_path_factory.mktemp("demo")
    (where / "data").mkdir()
    job = run(["bash", "-e", "-c", config.data_recipe(ROOT / "configs" / "quickstart.yaml")],
              timeout=BLOCK_TIMEOUT, env=doc_env(), cwd=where)
    assert job.returncode == 0, job.output
    return where / "data" / "quickstart.h5"


def checkout_after_make_demo(where: Path, demo_data: Path) -> Path:
    where.mkdir()
    shutil.copytree(ROOT / "configs", where / "configs")
    shutil.copytree(ROOT / "scripts", where / "scripts",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (where / ".venv").symlink_to(BIN.parent, target_is_directory=True)
    (where / "data").mkdir()
    shutil.copyfile(demo_data, where / "data" / "quickstart.h5")
    return where


@pytest.mark.parametrize("page", [page for page in pages() if runnable(page)],
                         ids=lambda page: str(page.relative_to(ROOT)))
def test_the_shell_blocks_of_a_page_run(page, tmp_path, demo_data):
    """Each block that has no marker runs and exits 0, in order, in one directory per page;
    a failure names the page, the line of the block, the block and its output."""
    workdir = checkout_after_make_demo(tmp_path / "checkout", demo_data)
    env = doc_env()
    for block in runnable(page):
        job = run(["bash", "-e", "-o", "pipefail", "-c", block.script()], timeout=BLOCK_TIMEOUT,
                  env=dict(env), cwd=workdir)
        if job.returncode != 0 or job.timed_out:
            ended = (f"timed out after {BLOCK_TIMEOUT} s" if job.timed_out
                     else f"exit code {job.returncode}")
            pytest.fail(f"{block.where}: the block fails ({ended} after {job.seconds:.1f} s); "
                        "make it run, or put `<!-- not run by the tests: REASON -->` right "
                        f"above it\n"
                        f"--- block:\n{block.script()}--- output:\n{job.output}")
