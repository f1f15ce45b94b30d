"""The example programs in scripts/examples run under a real launcher and say what they did."""

import re

from launch import ROOT, run_mpi


def test_two_models_split_trains_one_model_per_group_at_once():
    job = run_mpi(4, [str(ROOT / "scripts" / "examples" / "two_models_split.py")], timeout=180)
    assert job.returncode == 0 and not job.timed_out, job.output
    classifier = re.search(r"^group 0 \(world ranks 0, 2\): LogisticRegression .*test accuracy "
                           r"([\d.]+)", job.output, re.MULTILINE)
    clusters = re.search(r"^group 1 \(world ranks 1, 3\): KMeans k=3 on 3000 generated rows: "
                         r"inertia ([\d.]+), largest centre error ([\d.]+)", job.output,
                         re.MULTILINE)
    assert classifier and clusters, job.output
    assert float(classifier[1]) > 0.93
    assert float(clusters[2]) < 0.1 and float(clusters[1]) > 0
    assert job.output.count("group ") == 2, job.output  # one line per group, from its rank 0
