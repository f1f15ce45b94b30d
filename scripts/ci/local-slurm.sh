#!/usr/bin/env bash
# A real single-node Slurm for CI and for trying scripts/slurm/*.sbatch on one machine.
#
#   scripts/ci/local-slurm.sh start    install (if missing), configure and start munge, slurmctld
#                                      and slurmd; wait until the node is idle
#   scripts/ci/local-slurm.sh stop     shut everything down that `start` started (safe to repeat)
#   scripts/ci/local-slurm.sh status   print whether the controller answers
#
#   scripts/ci/local-slurm.sh start|stop|status --nodes N
#                                      the same with one slurmd on each of the first N simulated
#                                      hosts of scripts/ci/local-cluster.sh (which must be up):
#                                      node mpiml-hI at its address, slurmctld on this machine
#
# Needs root and apt-get (Debian packages slurm-wlm and munge). No systemd: the daemons are
# started by hand. Everything Slurm writes lives under $MPIML_SLURM_PREFIX (default
# /tmp/mpiml-slurm): slurm.conf, state, spool, logs, pid files. `start` writes $PREFIX/env:
#
#   . /tmp/mpiml-slurm/env      # export SLURM_CONF=/tmp/mpiml-slurm/slurm.conf
#
# The settings are the ones measured in ../shared/notes/mpi-failure-and-slurm.md; the notable ones:
# AuthInfo=cred_expire=10 with SchedulerParameters=bf_interval=1,sched_interval=2 (a requeued job
# restarts ~12 s after `scontrol requeue`, measured; ~31 s without the scheduler settings and
# ~160 s with Slurm's defaults), KillOnBadExit=1 (a rank that dies ends its step), MinJobAge=600
# (`scontrol show job` still answers for finished jobs; there is no accounting, so no sacct).
#
# No command waits on a missing config: Slurm's clients retry for 60 s when SLURM_CONF does not
# exist, and ~9 s when the controller is down, so every scontrol/sinfo call here first checks that
# the config is complete and the daemons run, and is bounded by $MPIML_SLURM_CLIENT_TIMEOUT (5 s).
# A start killed halfway is cleaned up by the next start (its daemons are found by SLURM_CONF).
#
# With --nodes N (docs/slurm.md, "Several nodes on one machine") the defaults move aside, so that
# both Slurms can run at once: prefix /tmp/mpiml-slurm-nodes, ports 6827/6828. Each slurmd runs in
# its host's network namespace under the host's hostname (and with the host's /etc/hosts),
# so all of them listen on the same SlurmdPort, each on its own address; spool, pid and log files
# are per node (%n). Munge's socket is a path, which every namespace sees. The timers are short
# (SlurmdTimeout=10: a dead node is DOWN and its job requeued within ~15 s). Running start again
# restarts the slurmd of a host whose processes were killed (a node that comes back).
set -euo pipefail

NODES=0
command=${1:-}
shift || true
while (($#)); do
    case $1 in
        --nodes) NODES=${2:?--nodes needs a number}; shift 2 ;;
        *) echo "local-slurm: error: unknown argument '$1'" >&2; exit 2 ;;
    esac
done
[[ $NODES =~ ^[0-9]{1,2}$ ]] || { echo "local-slurm: error: --nodes must be 1-99" >&2; exit 2; }
if ((NODES > 0)); then
    PREFIX=${MPIML_SLURM_PREFIX:-/tmp/mpiml-slurm-nodes}
    CTLD_PORT=${MPIML_SLURM_CTLD_PORT:-6827}
    SLURMD_PORT=${MPIML_SLURM_SLURMD_PORT:-6828}
else
    PREFIX=${MPIML_SLURM_PREFIX:-/tmp/mpiml-slurm}
    CTLD_PORT=${MPIML_SLURM_CTLD_PORT:-6817}
    SLURMD_PORT=${MPIML_SLURM_SLURMD_PORT:-6818}
fi
CONF=$PREFIX/slurm.conf
CLUSTER_PREFIX=${MPIML_CLUSTER_PREFIX:-/tmp/mpiml-cluster}
CLUSTER_NAME=${MPIML_CLUSTER_NAME:-mpiml}
START_TIMEOUT=${MPIML_SLURM_START_TIMEOUT:-60}
CLIENT_TIMEOUT=${MPIML_SLURM_CLIENT_TIMEOUT:-5}
CONF_END="# end of slurm.conf"
export SLURM_CONF=$CONF

say() { echo "local-slurm: $*"; }
die() { echo "local-slurm: error: $*" >&2; exit 1; }

pid_alive() {  # pid_alive FILE: the pid in FILE is a running process
    [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

conf_complete() {  # the config exists and was written to its last line
    [[ -s $CONF ]] && [[ $(tail -n1 "$CONF") == "$CONF_END" ]]
}

our_daemons() {  # pids of slurmctld/slurmd started with SLURM_CONF=$CONF (pid files or not)
    local pid
    for pid in $(pgrep -x slurmctld; pgrep -x slurmd); do
        tr '\0' '\n' 2>/dev/null <"/proc/$pid/environ" | grep -qxF "SLURM_CONF=$CONF" \
            && echo "$pid"
    done
    return 0
}

client() {  # client CMD ARGS...: a Slurm client call, only on a complete config, time-bounded
    conf_complete || return 1
    timeout "$CLIENT_TIMEOUT" "$@"
}

install_packages() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
            && command -v sbatch >/dev/null && command -v munged >/dev/null; then
        return
    fi
    [[ $(id -u) -eq 0 ]] || die "slurm-wlm/munge are not installed and installing needs root"
    command -v apt-get >/dev/null || die "slurm-wlm/munge are not installed and there is no apt-get"
    say "installing slurm-wlm and munge with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y --no-install-recommends slurm-wlm munge; then
        say "install failed; running apt-get update and trying again"
        apt-get update
        apt-get install -y --no-install-recommends slurm-wlm munge
    fi
}

start_munge() {
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        say "munge is already running"
        return
    fi
    if [[ ! -s /etc/munge/munge.key ]]; then
        say "creating /etc/munge/munge.key"
        mungekey --create
        chown munge:munge /etc/munge/munge.key
        chmod 600 /etc/munge/munge.key
    fi
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    say "starting munged (as user munge)"
    touch "$PREFIX/munge.started-by-us"  # before, so that a start killed here is undone by stop
    runuser -u munge -- munged
    for _ in $(seq 50); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return
        sleep 0.1
    done
    die "munged does not answer (munge -n | unmunge)"
}

node_names() {  # the simulated hosts' names, one a line (--nodes N)
    local i
    for i in $(seq "$NODES"); do echo "$CLUSTER_NAME-h$i"; done
}

node_addr() {  # node_addr NAME: the simulated host's address, from its namespace
    ip netns exec "$1" ip -o -4 addr show 2>/dev/null \
        | awk '$2 != "lo" {sub(/\/.*/, "", $4); print $4; exit}'
}

check_cluster() {  # --nodes N: the first N simulated hosts exist
    local name
    [[ $(id -u) -eq 0 ]] || die "--nodes needs root (slurmd in network namespaces)"
    for name in $(node_names); do
        [[ -n $(node_addr "$name") ]] || die "no simulated host $name: start the hosts first \
(scripts/ci/local-cluster.sh start $NODES)"
    done
}

write_conf() {
    local node cpus mem hw ctld_addr nodes_lines name addr
    node=$(hostname -s)
    # What slurmd itself detects (not `nproc`, which obeys OMP_NUM_THREADS=1 from the Makefile).
    hw=$(slurmd -C | head -n1)
    cpus=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$hw")
    mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")
    cpus=${cpus:-$(nproc --all)}
    mem=${mem:-1000}
    mkdir -p "$PREFIX"/{state,spool,log,run}
    if ((NODES > 0)); then
        addr=$(node_addr "$CLUSTER_NAME-h1")
        ctld_addr=${addr%.*}.254  # this machine on the hosts' bridge (local-cluster.sh)
        nodes_lines="SlurmdTimeout=10
MessageTimeout=5
TCPTimeout=2
SlurmdSpoolDir=$PREFIX/spool/%n
SlurmdPidFile=$PREFIX/run/slurmd-%n.pid
SlurmdLogFile=$PREFIX/log/slurmd-%n.log"
        for name in $(node_names); do
            mkdir -p "$PREFIX/spool/$name"
            nodes_lines+=$'\n'"NodeName=$name NodeAddr=$(node_addr "$name") CPUs=$cpus \
RealMemory=$mem State=UNKNOWN"
        done
        nodes_lines+=$'\n'"PartitionName=debug Nodes=$(node_names | paste -sd,) Default=YES \
MaxTime=INFINITE State=UP"
        say "writing $CONF ($NODES nodes on the simulated hosts, controller $ctld_addr)"
    else
        ctld_addr=127.0.0.1
        nodes_lines="SlurmdSpoolDir=$PREFIX/spool
SlurmdPidFile=$PREFIX/run/slurmd.pid
SlurmdLogFile=$PREFIX/log/slurmd.log
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP"
        say "writing $CONF (node $node, CPUs=$cpus, RealMemory=$mem)"
    fi
    cat >"$CONF.new" <<EOF
# Written by scripts/ci/local-slurm.sh: one partition, no accounting, no cgroups.
ClusterName=mpiml-ci
SlurmctldHost=$node($ctld_addr)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
KillOnBadExit=1
KillWait=30
MailProg=/bin/true
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$PREFIX/log/jobcomp.txt
MinJobAge=600
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1,sched_interval=2
StateSaveLocation=$PREFIX/state
SlurmctldPidFile=$PREFIX/run/slurmctld.pid
SlurmctldLogFile=$PREFIX/log/slurmctld.log
SlurmctldDebug=info
SlurmdDebug=info
$nodes_lines
$CONF_END
EOF
    mv "$CONF.new" "$CONF"
}

write_env() {
    printf 'export SLURM_CONF=%s\n' "$CONF" >"$PREFIX/env"
    say "wrote $PREFIX/env (source it, or set SLURM_CONF=$CONF)"
}

slurmd_nodes() {  # what each slurmd is started as: the hosts' names, or "-" for this machine
    if ((NODES > 0)); then node_names; else echo -; fi
}

slurmd_pidfile() {  # slurmd_pidfile NODE
    if [[ $1 == - ]]; then echo "$PREFIX/run/slurmd.pid"; else echo "$PREFIX/run/slurmd-$1.pid"; fi
}

start_slurmd() {  # start_slurmd NODE: on this machine, or in the host's namespace as that host
    if [[ $1 == - ]]; then
        say "starting slurmd"
        slurmd
    else
        # What `ip netns exec` does (the host's /etc/hosts, a /sys that shows the namespace's
        # interfaces, which UCX lists), plus the cgroup mounts slurmd needs, which a fresh /sys
        # lacks: all in a mount namespace of its own, under the host's hostname.
        say "starting slurmd of $1 in its namespace"
        mkdir -p "$PREFIX/cgroup"
        unshare --mount --uts sh -c "mount --bind '/etc/netns/$1/hosts' /etc/hosts \
            && mount --rbind /sys/fs/cgroup '$PREFIX/cgroup' && hostname '$1' \
            && exec nsenter --net='/run/netns/$1' sh -c 'mount -t sysfs sysfs /sys \
            && mount --rbind \"$PREFIX/cgroup\" /sys/fs/cgroup && exec slurmd -N \"$1\"'"
    fi
}

node_states() {  # "NODE STATE" lines
    client sinfo -h -N -o '%N %t' 2>/dev/null || true
}

start() {
    local node restarted=0
    install_packages
    ((NODES == 0)) || check_cluster
    mkdir -p "$PREFIX"
    start_munge
    if pid_alive "$PREFIX/run/slurmctld.pid" && client scontrol ping >/dev/null 2>&1; then
        for node in $(slurmd_nodes); do
            if ! pid_alive "$(slurmd_pidfile "$node")"; then
                start_slurmd "$node"
                restarted=$((restarted + 1))
            fi
        done
        if ((restarted == 0)); then
            say "slurmctld and slurmd are already running ($CONF)"
        fi
    else
        stop_slurm quiet
        write_conf
        say "starting slurmctld"
        slurmctld -c
        for node in $(slurmd_nodes); do start_slurmd "$node"; done
    fi
    write_env
    local states="" waiting deadline=$((SECONDS + START_TIMEOUT))
    while ((SECONDS < deadline)); do
        states=$(node_states)
        waiting=$(awk '$2 !~ /^(idle|mix|alloc)$/ {print $1}' <<<"$states")
        if [[ -n $states && -z $waiting ]]; then
            if ((NODES > 0)); then
                say "$NODES nodes are up ($(awk '{print $1 "=" $2}' <<<"$states" | paste -sd' '));" \
                    "SLURM_CONF=$CONF"
            else
                say "node is up (state $(awk '{print $2}' <<<"$states")); SLURM_CONF=$CONF"
            fi
            return
        fi
        for node in $(awk '$2 ~ /^(down|drain|fail)/ {print $1}' <<<"$states"); do
            client scontrol update nodename="$node" state=resume >/dev/null 2>&1 || true
        done
        sleep 0.5
    done
    tail -n 20 "$PREFIX/log/slurmctld.log" "$PREFIX"/log/slurmd*.log >&2 || true
    die "the nodes did not become idle within ${START_TIMEOUT} s (states: '${states:-none}')"
}

stop_slurm() {  # stop_slurm [quiet]: end slurmctld/slurmd started from $CONF, pid files or not
    local pids pid
    pids=$(our_daemons)
    if [[ -z $pids ]]; then
        [[ ${1:-} == quiet ]] || say "slurmctld and slurmd are not running"
        rm -f "$PREFIX"/run/*.pid
        return
    fi
    say "stopping slurmctld and slurmd"
    if ! client scontrol shutdown >/dev/null 2>&1; then
        kill $pids 2>/dev/null || true  # no config or no controller to ask: SIGTERM them
    fi
    for pid in $pids; do
        for _ in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            say "pid $pid still running after 10 s: SIGTERM"
            kill "$pid" 2>/dev/null || true
            sleep 1
            if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid" 2>/dev/null || true; fi
        fi
    done
    rm -f "$PREFIX"/run/*.pid
}

other_slurm_prefix() {  # the state directory of another running local Slurm, if any
    local pid conf
    for pid in $(pgrep -x slurmctld); do
        conf=$(tr '\0' '\n' 2>/dev/null <"/proc/$pid/environ" | sed -n 's/^SLURM_CONF=//p')
        [[ -n $conf && $conf != "$CONF" ]] && { dirname "$conf"; return; }
    done
    return 0
}

stop() {
    local other
    if [[ ! -d $PREFIX ]]; then
        say "nothing to stop ($PREFIX does not exist)"
        return
    fi
    stop_slurm
    if [[ -e $PREFIX/munge.started-by-us ]]; then
        other=$(other_slurm_prefix)
        if [[ -n $other && -d $other ]]; then  # still needed: its stop stops munged
            say "leaving munged running for the Slurm in $other"
            mv "$PREFIX/munge.started-by-us" "$other/munge.started-by-us"
        else
            say "stopping munged"
            runuser -u munge -- munged --stop >/dev/null 2>&1 || true
            rm -f "$PREFIX/munge.started-by-us"
        fi
    fi
    say "stopped"
}

status() {
    if ! conf_complete; then
        say "down (no complete $CONF)"
        return 1
    fi
    if ! pid_alive "$PREFIX/run/slurmctld.pid"; then
        say "down (slurmctld is not running)"
        return 1
    fi
    if client scontrol ping 2>/dev/null | grep -q UP; then
        say "up; node state $(node_states | awk '{print $2}' | paste -sd' '); SLURM_CONF=$CONF"
    else
        say "down"
        return 1
    fi
}

case $command in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status [--nodes N]   (prefix: $PREFIX)" >&2; exit 2 ;;
esac
