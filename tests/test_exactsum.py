"""Exact block sums: any grouping of the same blocks gives the same bits."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from mpi4py import MPI

from mpiml.comm import Reducer
from mpiml.comm.exact import grid_exponents


def exact_sum(blocks, width, n_blocks, comm, votes=None):
    """The reducer's exact block sums on ``comm``."""
    return Reducer(comm).exact_sum(blocks, width, n_blocks, votes)


def blocks_of(seed: int, count: int, width: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    scales = 10.0 ** rng.uniform(-8, 8, size=width)
    return [rng.standard_normal(width) * scales for _ in range(count)]


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10**6), count=st.integers(1, 60), width=st.integers(1, 9),
       data=st.data())
def test_result_is_independent_of_grouping_and_order(seed, count, width, data):
    blocks = blocks_of(seed, count, width)
    whole, _ = exact_sum(blocks, width, count, MPI.COMM_SELF)
    order = data.draw(st.permutations(range(count)))
    shuffled, _ = exact_sum([blocks[i] for i in order], width, count, MPI.COMM_SELF)
    assert whole.tobytes() == shuffled.tobytes()


def test_accuracy_against_ordinary_float64_summation():
    blocks = blocks_of(3, 1000, 6)
    exact, _ = exact_sum(blocks, 6, len(blocks), MPI.COMM_SELF)
    reference = np.sum(np.array(blocks, dtype=np.longdouble), axis=0)
    largest = np.max(np.abs(blocks), axis=0)
    assert np.all(np.abs(exact - reference.astype(np.float64)) <= 1e-15 * 1000 * largest)


def test_non_finite_values_give_nan_not_overflow():
    blocks = [np.array([1.0, np.nan, 2.0]), np.array([1.0, 3.0, np.inf])]
    result, _ = exact_sum(blocks, 3, 2, MPI.COMM_SELF)
    assert result[0] == 2.0 and np.isnan(result[1]) and np.isnan(result[2])


def test_votes_are_combined_by_max_and_zero_stays_zero():
    result, votes = exact_sum([np.zeros(3)], 3, 1, MPI.COMM_SELF, votes=np.array([0.0, 1.0]))
    assert not result.any() and votes.tolist() == [0.0, 1.0]


def test_grid_keeps_the_sum_of_all_blocks_inside_int64():
    exponents = grid_exponents(np.array([1e300, 1e-300, 1.0]), 2**20)
    for magnitude, exponent in zip([1e300, 1e-300, 1.0], exponents, strict=True):
        assert abs(np.ldexp(magnitude, int(exponent))) * 2**20 < 2.0**62
        assert abs(np.ldexp(magnitude, int(exponent))) * 2**20 >= 2.0**60
