#!/usr/bin/env bash
# A real single-node Slurm for CI and for trying scripts/slurm/*.sbatch on one machine.
#
#   scripts/ci/local-slurm.sh start    install (if missing), configure and start munge, slurmctld
#                                      and slurmd; wait until the node is idle
#   scripts/ci/local-slurm.sh stop     shut everything down that `start` started (safe to repeat)
#   scripts/ci/local-slurm.sh status   print whether the controller answers
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
set -euo pipefail

PREFIX=${MPIML_SLURM_PREFIX:-/tmp/mpiml-slurm}
CONF=$PREFIX/slurm.conf
CTLD_PORT=${MPIML_SLURM_CTLD_PORT:-6817}
SLURMD_PORT=${MPIML_SLURM_SLURMD_PORT:-6818}
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

write_conf() {
    local node cpus mem hw
    node=$(hostname -s)
    # What slurmd itself detects (not `nproc`, which obeys OMP_NUM_THREADS=1 from the Makefile).
    hw=$(slurmd -C | head -n1)
    cpus=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$hw")
    mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$hw")
    cpus=${cpus:-$(nproc --all)}
    mem=${mem:-1000}
    mkdir -p "$PREFIX"/{state,spool,log,run}
    say "writing $CONF (node $node, CPUs=$cpus, RealMemory=$mem)"
    cat >"$CONF.new" <<EOF
# Written by scripts/ci/local-slurm.sh: one node, one partition, no accounting, no cgroups.
ClusterName=mpiml-ci
SlurmctldHost=$node(127.0.0.1)
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
SlurmdSpoolDir=$PREFIX/spool
SlurmctldPidFile=$PREFIX/run/slurmctld.pid
SlurmdPidFile=$PREFIX/run/slurmd.pid
SlurmctldLogFile=$PREFIX/log/slurmctld.log
SlurmdLogFile=$PREFIX/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP
$CONF_END
EOF
    mv "$CONF.new" "$CONF"
}

write_env() {
    printf 'export SLURM_CONF=%s\n' "$CONF" >"$PREFIX/env"
    say "wrote $PREFIX/env (source it, or set SLURM_CONF=$CONF)"
}

node_state() { client sinfo -h -o %t 2>/dev/null | head -n1 || true; }

start() {
    install_packages
    mkdir -p "$PREFIX"
    start_munge
    if pid_alive "$PREFIX/run/slurmctld.pid" && pid_alive "$PREFIX/run/slurmd.pid" \
            && client scontrol ping >/dev/null 2>&1; then
        say "slurmctld and slurmd are already running ($CONF)"
    else
        stop_slurm quiet
        write_conf
        say "starting slurmctld"
        slurmctld -c
        say "starting slurmd"
        slurmd
    fi
    write_env
    local state="" deadline=$((SECONDS + START_TIMEOUT))
    while ((SECONDS < deadline)); do
        state=$(node_state)
        case $state in
            idle | mix | alloc) say "node is up (state $state); SLURM_CONF=$CONF"; return ;;
            down* | drain* | fail*) client scontrol update nodename="$(hostname -s)" \
                                        state=resume >/dev/null 2>&1 || true ;;
        esac
        sleep 0.5
    done
    tail -n 20 "$PREFIX/log/slurmctld.log" "$PREFIX/log/slurmd.log" >&2 || true
    die "the node did not become idle within ${START_TIMEOUT} s (state: '${state:-none}')"
}

stop_slurm() {  # stop_slurm [quiet]: end slurmctld/slurmd started from $CONF, pid files or not
    local ctld="$PREFIX/run/slurmctld.pid" slurmd="$PREFIX/run/slurmd.pid" pids pid
    pids=$(our_daemons)
    if [[ -z $pids ]]; then
        [[ ${1:-} == quiet ]] || say "slurmctld and slurmd are not running"
        rm -f "$ctld" "$slurmd"
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
    rm -f "$ctld" "$slurmd"
}

stop() {
    if [[ ! -d $PREFIX ]]; then
        say "nothing to stop ($PREFIX does not exist)"
        return
    fi
    stop_slurm
    if [[ -e $PREFIX/munge.started-by-us ]]; then
        say "stopping munged"
        runuser -u munge -- munged --stop >/dev/null 2>&1 || true
        rm -f "$PREFIX/munge.started-by-us"
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
        say "up; node state $(node_state); SLURM_CONF=$CONF"
    else
        say "down"
        return 1
    fi
}

case ${1:-} in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status   (prefix: $PREFIX)" >&2; exit 2 ;;
esac
