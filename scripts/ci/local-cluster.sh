#!/usr/bin/env bash
# N simulated hosts on this machine, for multi-host MPI runs (docs/multi-node.md).
#
#   scripts/ci/local-cluster.sh start N [--delay 25us] [--rate 10gbit]
#   scripts/ci/local-cluster.sh status [N]  one line per host; non-zero unless all are up
#   scripts/ci/local-cluster.sh stop        remove everything start made (safe to repeat)
#
# Host I is a network namespace mpiml-hI with the address $SUBNET.I on a private bridge
# (mpiml-br0, where this machine is $SUBNET.254), its own hostname mpiml-hI (sshd runs under
# `unshare --uts`, so everything started over ssh sees it) and a real sshd on port 22. All hosts
# share this machine's filesystem. Needs root, iproute2 and openssh-server (installed with apt-get
# when missing). MPIML_CLUSTER_SUBNET (default 10.77.0, checked unused), MPIML_CLUSTER_NAME
# (default mpiml: the stem of every name, so that two clusters can coexist) and
# MPIML_CLUSTER_SLOTS (ranks per host in the hostfiles, default 2) change the defaults.
# Everything lives under $MPIML_CLUSTER_PREFIX (default /tmp/mpiml-cluster):
#
#   ssh               the ssh that launchers use (generated key and config, BatchMode, no host
#                     key checks): mpiexec -launcher ssh -launcher-exec $PREFIX/ssh,
#                     mpirun --mca plm_ssh_agent $PREFIX/ssh
#   hostfile.mpich    one "$SUBNET.I:SLOTS" line per host; hostfile.openmpi: "$SUBNET.I slots=SLOTS"
#   env               exports MPIML_CLUSTER_SSH, MPIML_CLUSTER_HOSTS, MPIML_CLUSTER_IFACE
#
# Inside the namespaces the hosts resolve each other by name (mpiml-hI) and this machine's
# hostname resolves to $SUBNET.254, so that launchers' callbacks reach it: through
# /etc/netns/mpiml-hI/hosts, which `ip netns exec` shows as /etc/hosts there; the machine's own
# /etc/hosts is not touched. --delay/--rate shape both directions of every host's link: tc netem
# (--delay, with --rate if given; start fails when the kernel has no netem) or tc tbf (--rate alone).
set -euo pipefail

say() { echo "local-cluster: $*"; }
die() { echo "local-cluster: error: $*" >&2; exit 1; }

PREFIX=${MPIML_CLUSTER_PREFIX:-/tmp/mpiml-cluster}
SUBNET=${MPIML_CLUSTER_SUBNET:-10.77.0}
SLOTS=${MPIML_CLUSTER_SLOTS:-2}
NAME=${MPIML_CLUSTER_NAME:-mpiml}  # the stem of every name: hosts $NAME-hI, bridge $NAME-br0
[[ $NAME =~ ^[a-z][a-z0-9]{0,9}$ ]] || die "MPIML_CLUSTER_NAME must be 1-10 of [a-z0-9]: '$NAME'"
BRIDGE=$NAME-br0
IFACE=mpiml0  # the interface's name inside every namespace
SSH_TIMEOUT=10
# ssh gives up on a host that stopped answering (a partition, a dead host) after about
# ALIVE_INTERVAL x ALIVE_COUNT s (and Open MPI's launcher with it); TCP alone waits for minutes
ALIVE_INTERVAL=2 ALIVE_COUNT=3

ns_of() { echo "$NAME-h$1"; }
addr_of() { echo "$SUBNET.$1"; }

our_namespaces() {  # every namespace this script makes, recorded or not (after a crash)
    ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^$NAME-h[0-9]+\$" || true
}

install_packages() {
    command -v ip >/dev/null || die "ip (iproute2) is missing"
    if command -v sshd >/dev/null || [[ -x /usr/sbin/sshd ]]; then
        command -v ssh >/dev/null && command -v ssh-keygen >/dev/null && return
    fi
    command -v apt-get >/dev/null || die "openssh-server is not installed and there is no apt-get"
    say "installing openssh-server and openssh-client with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y --no-install-recommends openssh-server openssh-client; then
        apt-get update
        apt-get install -y --no-install-recommends openssh-server openssh-client
    fi
}

check_subnet_free() {  # nothing on this machine but our bridge uses $SUBNET.0/24
    local used
    used=$(ip -o -4 addr show | awk -v br="$BRIDGE" '$2 != br {print $2, $4}' \
        | grep -F " $SUBNET." || true)
    used+=$(ip -4 route show | grep -v "dev $BRIDGE" | grep -F "$SUBNET." || true)
    [[ -z $used ]] || die "$SUBNET.0/24 is in use here ($used): set MPIML_CLUSTER_SUBNET"
}

make_keys() {
    mkdir -p "$PREFIX/keys"
    ssh-keygen -q -t ed25519 -N '' -C mpiml-cluster-host -f "$PREFIX/keys/host_ed25519"
    ssh-keygen -q -t ed25519 -N '' -C mpiml-cluster-user -f "$PREFIX/keys/id_ed25519"
    cat >"$PREFIX/ssh_config" <<EOF
# Written by scripts/ci/local-cluster.sh
Host *
    User root
    IdentityFile $PREFIX/keys/id_ed25519
    IdentitiesOnly yes
    StrictHostKeyChecking no
    UserKnownHostsFile /dev/null
    GlobalKnownHostsFile /dev/null
    BatchMode yes
    ConnectTimeout 5
    ServerAliveInterval $ALIVE_INTERVAL
    ServerAliveCountMax $ALIVE_COUNT
    LogLevel ERROR
EOF
    printf '#!/bin/sh\n# ssh into the simulated hosts (scripts/ci/local-cluster.sh)\n'\
'exec ssh -F %s "$@"\n' "$PREFIX/ssh_config" >"$PREFIX/ssh"
    chmod 755 "$PREFIX/ssh"
}

write_host_files() {  # the per-namespace /etc/hosts and the launchers' hostfiles
    local n=$1 i names
    names="127.0.0.1 localhost"$'\n'"$SUBNET.254 $(hostname) $NAME-head"
    for i in $(seq "$n"); do names+=$'\n'"$(addr_of "$i") $(ns_of "$i")"; done
    : >"$PREFIX/hostfile.mpich"
    : >"$PREFIX/hostfile.openmpi"
    for i in $(seq "$n"); do
        mkdir -p "/etc/netns/$(ns_of "$i")"
        printf '# Written by scripts/ci/local-cluster.sh\n%s\n' "$names" \
            >"/etc/netns/$(ns_of "$i")/hosts"
        echo "$(addr_of "$i"):$SLOTS" >>"$PREFIX/hostfile.mpich"
        echo "$(addr_of "$i") slots=$SLOTS" >>"$PREFIX/hostfile.openmpi"
        printf 'Host %s\n    HostName %s\n' "$(ns_of "$i")" "$(addr_of "$i")" \
            >>"$PREFIX/ssh_config"
    done
}

shape() {  # shape DEV [NETNS]: --delay (and --rate) with netem; --rate alone with tbf
    local dev=$1 run=()
    [[ -n ${2:-} ]] && run=(ip netns exec "$2")
    if [[ -n $DELAY ]]; then
        "${run[@]}" tc qdisc replace dev "$dev" root netem delay "$DELAY" ${RATE:+rate "$RATE"}
    elif [[ -n $RATE ]]; then
        "${run[@]}" tc qdisc replace dev "$dev" root tbf rate "$RATE" burst 256kb latency 10ms
    fi
}

check_netem() {  # --delay needs sch_netem, which some kernels lack (CONFIG_NET_SCH_NETEM)
    if ! tc qdisc replace dev "$BRIDGE" root netem delay 0ms 2>/dev/null; then
        stop quiet
        die "--delay needs tc netem, which this kernel lacks (CONFIG_NET_SCH_NETEM); --rate \
alone works (tbf)"
    fi
    tc qdisc del dev "$BRIDGE" root
}

start_host() {  # start_host I: namespace, link, address, hostname and sshd of host I
    local i=$1 ns addr dir
    ns=$(ns_of "$i") addr=$(addr_of "$i") dir=$PREFIX/$ns
    mkdir -p "$dir"
    ip netns add "$ns"
    ip link add "${ns}b" type veth peer name "$IFACE" netns "$ns"
    ip link set "${ns}b" master "$BRIDGE" up
    ip netns exec "$ns" ip link set lo up
    ip netns exec "$ns" ip addr add "$addr/24" dev "$IFACE"
    ip netns exec "$ns" ip link set "$IFACE" up
    shape "${ns}b"
    shape "$IFACE" "$ns"
    cat >"$dir/sshd_config" <<EOF
# Written by scripts/ci/local-cluster.sh for $ns ($addr)
ListenAddress $addr
Port 22
HostKey $PREFIX/keys/host_ed25519
PidFile $dir/sshd.pid
PermitRootLogin prohibit-password
AuthorizedKeysFile $PREFIX/keys/id_ed25519.pub
StrictModes no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PrintMotd no
X11Forwarding no
MaxStartups 64
LogLevel ERROR
EOF
    ip netns exec "$ns" unshare --uts sh -c \
        "hostname '$ns' && exec /usr/sbin/sshd -f '$dir/sshd_config' -E '$dir/sshd.log'"
}

host_state() {  # host_state I: "up" or why not; the ssh answer is the host's hostname
    local i=$1 ns got
    ns=$(ns_of "$i")
    ip netns list | grep -qE "^$ns( |$)" || { echo "down (no namespace $ns)"; return; }
    [[ -s $PREFIX/$ns/sshd.pid ]] && kill -0 "$(cat "$PREFIX/$ns/sshd.pid")" 2>/dev/null \
        || { echo "down (sshd is not running)"; return; }
    got=$(timeout "$SSH_TIMEOUT" "$PREFIX/ssh" "$(addr_of "$i")" hostname 2>&1) \
        || { echo "down (ssh: ${got//$'\n'/ })"; return; }
    [[ $got == "$ns" ]] || { echo "down (ssh answers with hostname '$got')"; return; }
    echo up
}

hosts_recorded() { [[ -s $PREFIX/hosts ]] && cat "$PREFIX/hosts" || echo 0; }

status() {
    local n=${1:-$(hosts_recorded)} i state bad=0
    ((n > 0)) || { say "down (not started)"; return 1; }
    for i in $(seq "$n"); do
        state=$(host_state "$i")
        say "$(ns_of "$i") $(addr_of "$i") $state"
        [[ $state == up ]] || bad=1
    done
    return $bad
}

start() {
    local n=$1 i deadline
    [[ $n =~ ^[1-9][0-9]?$ ]] || die "N must be 1-99, got '$n'"
    [[ $(id -u) -eq 0 ]] || die "needs root (network namespaces)"
    if [[ $(hosts_recorded) == "$n" ]] && [[ -z $DELAY$RATE ]] && status "$n" >/dev/null 2>&1; then
        say "already running: $n hosts ($PREFIX)"
        return
    fi
    install_packages
    stop quiet
    if [[ -n $DELAY$RATE ]]; then command -v tc >/dev/null || die "tc (iproute2) is missing"; fi
    check_subnet_free
    mkdir -p "$PREFIX"
    if [[ ! -d /run/sshd ]]; then  # sshd's privilege separation directory; stop removes it
        mkdir -p /run/sshd
        touch /run/sshd/.made-by-local-cluster
    fi
    echo "$n" >"$PREFIX/hosts"
    make_keys
    write_host_files "$n"
    ip link add "$BRIDGE" type bridge
    ip addr add "$SUBNET.254/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up
    if [[ -n $DELAY ]]; then check_netem; fi
    for i in $(seq "$n"); do start_host "$i"; done
    printf 'export MPIML_CLUSTER_SSH=%s\nexport MPIML_CLUSTER_HOSTS="%s"\nexport MPIML_CLUSTER_IFACE=%s\n' \
        "$PREFIX/ssh" "$(for i in $(seq "$n"); do printf '%s ' "$(addr_of "$i")"; done | xargs)" \
        "$IFACE" >"$PREFIX/env"
    deadline=$((SECONDS + 30))
    until status "$n" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || { status "$n" >&2 || true; die "hosts not up within 30 s"; }
        sleep 0.2
    done
    say "$n hosts up (${DELAY:+delay $DELAY }${RATE:+rate $RATE }$SUBNET.1-$n): . $PREFIX/env"
}

stop() {  # stop [quiet]: every process, namespace, link and file start made, recorded or not
    local ns pids
    for ns in $(our_namespaces); do
        pids=$(ip netns pids "$ns" 2>/dev/null || true)
        if [[ -n $pids ]]; then kill -9 $pids 2>/dev/null || true; fi
    done
    for ns in $(our_namespaces); do  # until they are gone (at most 2 s)
        for _ in $(seq 20); do
            [[ -z $(ip netns pids "$ns" 2>/dev/null) ]] && break
            sleep 0.1
        done
    done
    if [[ -d $PREFIX ]]; then  # an sshd whose namespace is already gone
        for pids in "$PREFIX/$NAME"-h*/sshd.pid; do
            [[ -s $pids ]] && kill -9 "$(cat "$pids")" 2>/dev/null || true
        done
    fi
    for ns in $(our_namespaces); do
        ip link del "${ns}b" 2>/dev/null || true
        ip netns del "$ns"
        rm -rf "/etc/netns/$ns"
    done
    for ns in "/etc/netns/$NAME"-h*; do [[ -e $ns ]] && rm -rf "$ns"; done
    rmdir /etc/netns 2>/dev/null || true
    if ip link show "$BRIDGE" >/dev/null 2>&1; then ip link del "$BRIDGE"; fi
    if [[ -e /run/sshd/.made-by-local-cluster ]] && ! ps -C sshd -o stat= | grep -qv '^Z'; then
        rm -rf /run/sshd  # made by start, and no other sshd runs (another cluster's, say)
    fi
    rm -rf "$PREFIX"
    [[ ${1:-} == quiet ]] || say "stopped"
}

DELAY="" RATE=""
command=${1:-}
shift || true
args=()
while (($#)); do
    case $1 in
        --delay) DELAY=${2:?--delay needs a value, e.g. 25us}; shift 2 ;;
        --rate) RATE=${2:?--rate needs a value, e.g. 10gbit}; shift 2 ;;
        *) args+=("$1"); shift ;;
    esac
done
case $command in
    start) start "${args[0]:-2}" ;;
    stop) stop ;;
    status) status "${args[@]}" ;;
    *) echo "usage: $0 start N [--delay D] [--rate R] | stop | status [N]   (prefix: $PREFIX)" >&2
       exit 2 ;;
esac
