"""``mpiml.estimators.load`` of a ``python -m mpiml.train`` model file on every rank: the same
estimator everywhere, on the caller's communicator; and a file no estimator can be made of
raises the same one-line error on every rank. Assertions are collective (``assert_all``)."""

import numpy as np
import pytest
from mpi4py import MPI
from mpi_asserts import assert_all
from sklearn.datasets import make_classification

import mpiml.estimators as E
from mpiml.config import dump, from_dict
from mpiml.files.model import save_model
from mpiml.models.saved import SavedModel

pytestmark = pytest.mark.mpi


def outcome(call):
    """(exception type, message) of ``call()``, or None when it returned."""
    try:
        call()
    except Exception as exc:  # noqa: BLE001 -- compared across ranks
        return type(exc).__name__, str(exc)
    return None


def write_on_rank_0(comm, path, saved: SavedModel, config_yaml: str) -> None:
    if comm.rank == 0:
        save_model(path, saved, config_yaml=config_yaml)
    comm.Barrier()


def test_a_cli_model_file_loads_as_the_same_estimator_on_every_rank(comm, mpi_tmp_path):
    X, y = make_classification(n_samples=200, n_features=4, n_informative=3, n_redundant=0,
                               n_classes=3, random_state=0)
    fitted = E.SoftmaxRegression(standardize=True, comm=MPI.COMM_SELF).fit(X, y)
    config = dump(from_dict({"model": {"kind": "softmax"}, "optimizer": {"name": "lbfgs"},
                             "data": {"standardize": True}}))
    path = mpi_tmp_path / "run-model.h5"
    write_on_rank_0(comm, path, fitted.model_, config)
    loaded = E.load(path, comm=comm)
    probabilities = loaded.predict_proba(X)
    same = comm.allgather(probabilities.tobytes())
    assert_all(type(loaded) is E.SoftmaxRegression and loaded.comm is comm
               and loaded.standardize and len(set(same)) == 1
               and np.allclose(probabilities, fitted.predict_proba(X), rtol=0, atol=1e-12),
               "loaded estimators differ", comm)
    twin = loaded.to_sklearn()
    assert_all(np.allclose(twin.predict_proba(X), probabilities, rtol=0, atol=1e-10),
               "to_sklearn differs", comm)


@pytest.mark.parametrize("case", ["l1-svm", "no-config", "not-hdf5"])
def test_a_file_no_estimator_can_be_made_of_raises_the_same_error_on_every_rank(
        comm, mpi_tmp_path, case):
    path = mpi_tmp_path / f"{case}.h5"
    saved = SavedModel("svm", 3, {"params": np.zeros(4)},
                       {"fit_intercept": True, "alpha": 0.1, "l1_ratio": 0.5, "loss": "hinge"})
    if case == "not-hdf5":
        if comm.rank == 0:
            path.write_text("not a model\n")
        comm.Barrier()
    else:
        config = dump(from_dict({"model": {"kind": "svm", "alpha": 0.1, "l1_ratio": 0.5},
                                 "optimizer": {"name": "sgd"}}))
        write_on_rank_0(comm, path, saved, config if case == "l1-svm" else "")
    got = outcome(lambda: E.load(path, comm=comm))
    everyone = comm.allgather(got)
    assert_all(got is not None and got[0] == "ValueError" and str(path) in got[1]
               and "\n" not in got[1] and all(other == got for other in everyone),
               f"{case}: got {everyone}", comm)
