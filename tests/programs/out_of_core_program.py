"""Peak RSS per rank of a streamed training run, for tests/test_out_of_core.py.

Usage: python out_of_core_program.py FILE BUDGET   logistic regression, 3 L-BFGS iterations,
                                                   with data.memory_budget BUDGET (bytes)
       python out_of_core_program.py --baseline    the same imports and MPI start, no data

Rank 0 prints one JSON line: every rank's peak RSS in bytes (``ru_maxrss``), and for a training
run whether X streamed and the model's parameter count.
"""

import json
import resource
import sys

from mpiml import config, run_spmd
from mpiml.comm import allgather_object, rank_and_size
from mpiml.data.stream import is_streamed
from mpiml.fit import fit, load_rows
from mpiml.run import open_run


def main() -> int:
    report = {}
    if sys.argv[1] != "--baseline":
        raw = {"data": {"train": sys.argv[1], "memory_budget": int(sys.argv[2])},
               "model": {"kind": "logistic"}, "optimizer": {"name": "lbfgs"},
               "train": {"max_steps": 3, "log_every": 10**6},
               "checkpoint": {"enabled": False}, "fault": {"stall_seconds": None}}
        with open_run(config.from_dict(raw)) as run:
            rows = load_rows(run)
            report["streamed"] = is_streamed(rows.shard.X)
            report["n_params"] = int(fit(run, rows).params.size)
    rss = allgather_object(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    if rank_and_size()[0] == 0:
        sys.stdout.write(json.dumps({"rss": rss, **report}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(run_spmd(main))
