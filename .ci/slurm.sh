#!/usr/bin/env bash
# A real single-node Slurm cluster for tests and CI (Debian/Ubuntu, run as root).
#
#   .ci/slurm.sh install          apt-get install slurm-wlm munge, only if slurmctld is missing
#   .ci/slurm.sh up   STATE_DIR   start munged + slurmctld + slurmd; prints `export SLURM_CONF=...`
#   .ci/slurm.sh down STATE_DIR   stop everything `up` started (jobs included); idempotent
#   .ci/slurm.sh status STATE_DIR exit 0 when all three daemons of STATE_DIR are alive
#
# Everything lives in STATE_DIR (slurm.conf, state, spool, logs, pid files, munge key copy, ports)
# except the munge socket: munged insists that every directory above its socket is world-executable,
# so the socket goes to /run/qec-kiln/munge-<cksum of STATE_DIR>/ (removed again by `down`).
# slurm.conf points every client at that socket (AuthInfo=socket=...), so a client only needs
# SLURM_CONF=STATE_DIR/slurm.conf in its environment.
#
#   eval "$(.ci/slurm.sh up /tmp/kiln-slurm)"; sbatch --wrap 'hostname'; .ci/slurm.sh down /tmp/kiln-slurm
#
# Knobs (environment): KILN_SLURM_CPUS (default `nproc`), KILN_SLURM_MEM_MB (default MemTotal minus
# max(512 MB, 10%)), KILN_SLURM_PORT (first slurmctld port tried, default 6817; slurmd uses the next
# one; busy pairs are skipped), KILN_SLURM_MIN_JOB_AGE (seconds a finished job stays known to
# slurmctld/scontrol, default 30), KILN_SLURM_CRED_EXPIRE (AuthInfo cred_expire, default 10 instead of
# Slurm's 120: it is also how long a requeued job waits before it may start again),
# KILN_SLURM_UP_TIMEOUT (seconds to wait for the node, default 60).
# Daemons run as root (SlurmUser=root); jobs run as the user who submits them.
set -euo pipefail
# log, die, require_root, apt_install, alive, port_busy, pid_in, show_usage: .ci/lib.sh
# shellcheck source=.ci/lib.sh
. "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/lib.sh"

usage() { show_usage 2,8; }
need_root() { require_root "(the daemons run as root)"; }

# ---------------------------------------------------------------------------------------------
# install
# ---------------------------------------------------------------------------------------------
cmd_install() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
        && command -v munged >/dev/null && command -v sbatch >/dev/null; then
        return 0
    fi
    need_root
    command -v apt-get >/dev/null || die "slurmctld is missing and there is no apt-get to install it"
    apt_install slurm-wlm munge
    command -v slurmctld >/dev/null || die "slurm-wlm installed but slurmctld is still missing"
}

# ---------------------------------------------------------------------------------------------
# paths and process helpers
# ---------------------------------------------------------------------------------------------
set_paths() {
    [[ -n ${1:-} ]] || usage
    STATE=$(realpath -m -- "$1")
    CONF=$STATE/slurm.conf
    RUN=$STATE/run
    LOGS=$STATE/log
    NODE=$(hostname -s)
    local sum
    sum=$(printf '%s' "$STATE" | cksum | cut -d' ' -f1)
    MUNGE_DIR=/run/qec-kiln/munge-$sum
    MUNGE_SOCKET=$MUNGE_DIR/munge.socket
    MUNGE_PID=$RUN/munged.pid
    CTLD_PID=$RUN/slurmctld.pid
    SLURMD_PID=$RUN/slurmd.pid
    export SLURM_CONF=$CONF
}

# pid_of PIDFILE COMM MARK: the pid in PIDFILE when that process is alive, is called COMM and has
# MARK in its command line (so a recycled pid never counts); empty otherwise.
pid_of() {
    local file=$1 comm=$2 mark=$3 pid
    pid=$(pid_in "$file")
    [[ -n $pid ]] && alive "$pid" || return 0
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "$comm" ]] || return 0
    [[ $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) == *"$mark"* ]] || return 0
    echo "$pid"
}

munged_pid() { pid_of "$MUNGE_PID" munged "$MUNGE_SOCKET"; }
ctld_pid() { pid_of "$CTLD_PID" slurmctld "$CONF"; }
slurmd_pid() { pid_of "$SLURMD_PID" slurmd "$CONF"; }

# stop_pid PID NAME: SIGTERM, wait up to 10 s, then SIGKILL.
stop_pid() {
    local pid=$1 name=$2 i
    [[ -n $pid ]] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 200; i++)); do
        alive "$pid" || return 0
        sleep 0.05
    done
    log "$name (pid $pid) ignored SIGTERM for 10 s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
}

show_logs() {
    local f
    for f in "$LOGS"/munged.log "$LOGS"/slurmctld.log "$LOGS"/slurmd.log; do
        [[ -s $f ]] || continue
        log "---- last lines of $f"
        tail -n 25 "$f" >&2
    done
}

# ---------------------------------------------------------------------------------------------
# up
# ---------------------------------------------------------------------------------------------
write_conf() {
    local cpus mem_total_mb mem_mb margin port min_age cred_expire
    cpus=${KILN_SLURM_CPUS:-$(nproc)}
    mem_total_mb=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
    margin=$((mem_total_mb / 10))
    ((margin >= 512)) || margin=512
    mem_mb=${KILN_SLURM_MEM_MB:-$((mem_total_mb - margin))}
    ((mem_mb >= 100)) || mem_mb=100
    min_age=${KILN_SLURM_MIN_JOB_AGE:-30}
    # cred_expire also delays a requeued job: it stays PENDING (Reason=BeginTime) this long.
    cred_expire=${KILN_SLURM_CRED_EXPIRE:-10}
    port=${KILN_SLURM_PORT:-6817}
    local tries=0
    while port_busy "$port" || port_busy "$((port + 1))"; do
        port=$((port + 2))
        tries=$((tries + 1))
        ((tries < 50)) || die "no free port pair found from ${KILN_SLURM_PORT:-6817} on"
    done
    cat >"$CONF.tmp" <<EOF
# Written by .ci/slurm.sh up $STATE -- a single-node test cluster; regenerated on every fresh start.
ClusterName=kiln
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$port
SlurmdPort=$((port + 1))
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=$cred_expire
StateSaveLocation=$STATE/state
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobRequeue=1
MinJobAge=$min_age
KillWait=5
InactiveLimit=0
ReturnToService=2
SlurmdParameters=config_overrides
SlurmctldTimeout=60
SlurmdTimeout=120
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
    mv "$CONF.tmp" "$CONF"
}

start_munged() {
    [[ -n $(munged_pid) ]] && return 0
    if [[ ! -s /etc/munge/munge.key ]]; then
        log "creating /etc/munge/munge.key"
        mkdir -p /etc/munge
        mungekey -c -k /etc/munge/munge.key
        chown munge:munge /etc/munge/munge.key 2>/dev/null || true
        chmod 600 /etc/munge/munge.key
    fi
    # munged runs as root here, and a root munged wants a root-owned key: use a private copy.
    install -m 600 -o root -g root /etc/munge/munge.key "$STATE/munge.key"
    mkdir -p /run/qec-kiln "$MUNGE_DIR"
    chmod 755 /run/qec-kiln "$MUNGE_DIR"
    rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock" "$MUNGE_PID"
    munged --socket="$MUNGE_SOCKET" --key-file="$STATE/munge.key" --pid-file="$MUNGE_PID" \
        --log-file="$LOGS/munged.log" --seed-file="$STATE/munged.seed" \
        || { show_logs; die "munged did not start"; }
    local i
    for ((i = 0; i < 50; i++)); do
        munge -S "$MUNGE_SOCKET" -n 2>/dev/null | unmunge -S "$MUNGE_SOCKET" >/dev/null 2>&1 \
            && return 0
        sleep 0.1
    done
    show_logs
    die "munged started but does not answer on $MUNGE_SOCKET"
}

node_state() { sinfo -h -N -n "$NODE" -o '%T' 2>/dev/null | head -n 1 || true; }

wait_node_idle() {
    local timeout=${KILN_SLURM_UP_TIMEOUT:-60} start state last_resume=0 now
    start=$(date +%s)
    while :; do
        state=$(node_state)
        now=$(date +%s)
        case $state in
            idle | mixed | allocated | completing) return 0 ;;
            *down* | *drain* | *fail*)
                # A node left DOWN/DRAINED by a crash or an earlier run: put it back in service.
                if ((now - last_resume >= 3)); then
                    log "node $NODE is '$state'; scontrol update state=resume"
                    scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true
                    last_resume=$now
                fi
                ;;
        esac
        if ((now - start >= timeout)); then
            show_logs
            log "sinfo:"; sinfo -N -l >&2 || true
            die "node $NODE not idle after ${timeout}s (last state: '${state:-no answer}')"
        fi
        sleep 0.5
    done
}

cmd_up() {
    need_root
    set_paths "${1:-}"
    command -v slurmctld >/dev/null || die "slurmctld is missing; run: $0 install"
    [[ $STATE =~ ^[A-Za-z0-9._/+-]+$ ]] \
        || die "STATE_DIR '$STATE' must be a plain path (slurm.conf cannot hold spaces or quotes)"
    # slurmstepd puts unix sockets (108-byte path limit) in STATE_DIR/spool.
    ((${#STATE} <= 70)) || die "STATE_DIR '$STATE' is too long (over 70 characters); use a shorter one"
    mkdir -p "$STATE" "$STATE/state" "$STATE/spool" "$RUN" "$LOGS"
    chmod 755 "$STATE"

    if [[ -s $CONF && -n $(munged_pid) && -n $(ctld_pid) && -n $(slurmd_pid) ]]; then
        log "already running ($CONF)"
    else
        # A partial or crashed cluster: stop whatever is left, drop stale pid files, start afresh
        # (job state in $STATE/state is kept; slurmctld recovers it).
        stop_daemons quiet
        rm -f "$MUNGE_PID" "$CTLD_PID" "$SLURMD_PID"
        write_conf
        start_munged
        slurmctld -f "$CONF" || { show_logs; die "slurmctld did not start"; }
        local i
        for ((i = 0; i < 100; i++)); do
            scontrol ping >/dev/null 2>&1 && break
            sleep 0.2
        done
        scontrol ping >/dev/null 2>&1 || { show_logs; die "slurmctld does not answer"; }
        slurmd -f "$CONF" -N "$NODE" || { show_logs; die "slurmd did not start"; }
        for ((i = 0; i < 50; i++)); do
            [[ -n $(slurmd_pid) ]] && break
            sleep 0.1
        done
        log "started munged, slurmctld, slurmd ($CONF)"
    fi
    wait_node_idle
    printf 'export SLURM_CONF=%q\n' "$CONF"
}

# ---------------------------------------------------------------------------------------------
# down
# ---------------------------------------------------------------------------------------------

# Job processes of this cluster: their environment holds SLURM_CONF=$CONF and a SLURM_JOB_ID.
# slurmstepd of this cluster: it keeps $LOGS/slurmd.log open.
leftover_pids() {
    local p pid fd env
    for p in /proc/[0-9]*; do
        pid=${p#/proc/}
        [[ $pid == "$$" || $pid == "$BASHPID" || $pid == "$PPID" ]] && continue
        if [[ $({ cat "$p/comm"; } 2>/dev/null) == slurmstepd ]]; then
            for fd in "$p"/fd/*; do
                if [[ $(readlink "$fd" 2>/dev/null) == "$LOGS"/* ]]; then
                    echo "$pid"
                    break
                fi
            done
            continue
        fi
        env=$'\n'$({ tr '\0' '\n' <"$p/environ"; } 2>/dev/null)$'\n' || continue
        if [[ $env == *$'\n'"SLURM_CONF=$CONF"$'\n'* && $env == *$'\n'SLURM_JOB_ID=* ]]; then
            echo "$pid"
        fi
    done
}

stop_daemons() {
    local quiet=${1:-} pid i jobs left
    # 1. Cancel every job while slurmctld is still there, so slurmstepd ends them cleanly.
    if [[ -n $(ctld_pid) ]]; then
        jobs=$(squeue -h -o '%A' 2>/dev/null | sort -u | tr '\n' ' ' || true)
        if [[ -n ${jobs// /} ]]; then
            # shellcheck disable=SC2086
            scancel $jobs >/dev/null 2>&1 || true
            for ((i = 0; i < 80; i++)); do
                [[ -z $(squeue -h -o '%A' 2>/dev/null || true) ]] && break
                sleep 0.25
            done
        fi
    fi
    # 2. Daemons, by their pid files.
    pid=$(slurmd_pid); [[ -z $pid ]] || stop_pid "$pid" slurmd
    pid=$(ctld_pid); [[ -z $pid ]] || stop_pid "$pid" slurmctld
    # 3. Anything a job left behind (slurmstepd survives slurmd by design).
    left=$(leftover_pids | tr '\n' ' ')
    if [[ -n ${left// /} ]]; then
        [[ -n $quiet ]] || log "killing leftover job processes: $left"
        # shellcheck disable=SC2086
        kill -KILL $left 2>/dev/null || true
    fi
    pid=$(munged_pid); [[ -z $pid ]] || stop_pid "$pid" munged
    rm -f "$MUNGE_PID" "$CTLD_PID" "$SLURMD_PID"
    rm -rf "$MUNGE_DIR"
}

cmd_down() {
    set_paths "${1:-}"
    [[ -d $STATE ]] || return 0
    need_root
    stop_daemons
}

cmd_status() {
    set_paths "${1:-}"
    [[ -s $CONF && -n $(munged_pid) && -n $(ctld_pid) && -n $(slurmd_pid) ]]
}

case ${1:-} in
    install) cmd_install ;;
    up) cmd_up "${2:-}" ;;
    down) cmd_down "${2:-}" ;;
    status) cmd_status "${2:-}" ;;
    *) usage ;;
esac
