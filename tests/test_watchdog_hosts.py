"""The stall watchdog names where late ranks run when a job spans several hosts (the multi-host
layer, tests/multihost/test_failures.py, sees it end a real job)."""

from mpiml.run.watchdog import StallWatchdog, placement


def late_ranks_named(heard: dict, hosts: list[str]) -> str:
    watchdog = StallWatchdog.__new__(StallWatchdog)  # no thread, no MPI: the naming rule only
    watchdog.seconds, now = 3.0, 100.0
    watchdog._heard = {rank: (step, False, now - ago) for rank, (step, ago) in heard.items()}
    return watchdog._late_ranks(now, hosts)


def test_placement_groups_ranks_by_host_in_rank_order():
    hosts = ["n1", "n1", "n2", "n2", "n1"]
    assert placement(range(5), hosts) == "ranks 0, 1, 4 on host n1; ranks 2, 3 on host n2"
    assert placement([3], hosts) == "rank 3 on host n2"


def test_silent_ranks_are_named_with_their_host_only_on_several_hosts():
    heard = {0: (40, 0.0), 1: (40, 0.1), 2: (31, 2.9), 3: (31, 2.9)}
    said = late_ranks_named(heard, ["n1", "n1", "n2", "n2"])
    assert said.startswith("late ranks: [2, 3]: ranks 2, 3 on host n2 (silent"), said
    said = late_ranks_named(heard, ["vm"] * 4)
    assert said.startswith("late ranks: [2, 3] (silent"), said
