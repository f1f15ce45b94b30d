"""Test-suite plumbing: keep BLAS single-threaded, keep the MPI layer out of the serial run,
and (with --fail-on-skip, as `make test` runs it) turn any skipped test into a failure."""

import json
import os
import shutil
import tempfile

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")


def pytest_addoption(parser):
    parser.addoption("--fail-on-skip", action="store_true",
                     help="exit non-zero if any test was skipped (a skipped test is not a pass)")


def pytest_ignore_collect(collection_path, config):
    """tests/mpi runs only under mpiexec with --with-mpi (see tests/test_mpi_layer.py)."""
    if collection_path.name == "mpi" and collection_path.parent.name == "tests":
        return not config.getoption("--with-mpi", default=False)
    return None


REPORT_DIR_VAR = "MPIML_TEST_REPORT_DIR"


def _mpi_rank() -> int:
    for var in ("PMI_RANK", "OMPI_COMM_WORLD_RANK"):
        if var in os.environ:
            return int(os.environ[var])
    return 0


def pytest_configure(config):
    """Under mpiexec, ranks above 0 get their own temporary base: otherwise every rank's pytest
    sweeps the same /tmp/pytest-of-USER directories at once and trips over the others."""
    if _mpi_rank() > 0 and config.option.basetemp is None:
        config.option.basetemp = tempfile.mkdtemp(prefix=f"mpiml-pytest-rank{_mpi_rank()}-")
        config.add_cleanup(lambda: shutil.rmtree(config.option.basetemp, ignore_errors=True))


def pytest_sessionfinish(session, exitstatus):
    """Write this rank's counts for the driver (tests/test_mpi_layer.py); apply --fail-on-skip."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    counts = {key: len(reporter.stats.get(key, [])) if reporter else 0
              for key in ("passed", "failed", "skipped", "error")}
    report_dir = os.environ.get(REPORT_DIR_VAR)
    if report_dir:
        with open(os.path.join(report_dir, f"rank-{_mpi_rank()}.json"), "w") as out:
            json.dump(dict(counts, exitstatus=int(exitstatus)), out)
    if not session.config.getoption("--fail-on-skip"):
        return
    skipped, passed = counts["skipped"], counts["passed"]
    if skipped or (exitstatus == 0 and passed == 0):
        reporter.write_line(f"--fail-on-skip: {skipped} skipped, {passed} passed: failing the run",
                            red=True)
        session.exitstatus = 1
