"""Fixtures for tests that run on every rank under mpiexec (pytest --with-mpi)."""

import pytest
from mpi4py import MPI


@pytest.fixture
def comm():
    return MPI.COMM_WORLD
