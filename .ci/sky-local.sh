#!/usr/bin/env bash
# A real SkyPilot 0.14.1 on this machine, with no cloud account and no traffic off loopback: its API
# server (jobs and pool controllers inside it: consolidation mode) and its Slurm infra pointed at a
# single-node Slurm on localhost over SSH. For tests, CI and "try it" (Debian/Ubuntu, run as root).
#
#   .ci/sky-local.sh install          apt-get slurm-wlm munge openssh-server rsync; a venv with
#                                     skypilot[slurm]==0.14.1 and uv at constraints.txt's versions (KILN_SKY_VENV, default
#                                     .ci/.sky-venv), patched to probe the internet on loopback,
#                                     a skylet port per cluster and slower controller polls
#   .ci/sky-local.sh start STATE_DIR  Slurm (unless KILN_SKY_SLURM_CONF names a running one), sshd
#                                     on 127.0.0.1, the API server; prints the client's exports
#   .ci/sky-local.sh stop  STATE_DIR  stop all that start started, by pid; idempotent
#   .ci/sky-local.sh env   STATE_DIR  print the client's exports again
#
#   eval "$(sudo .ci/sky-local.sh start /tmp/kiln-sky)"
#   qec-kiln launch CIRCUITS --backend skypilot --infra slurm --yaml MY_JOB.yaml ...
#   sudo .ci/sky-local.sh stop /tmp/kiln-sky
#
# Everything of a run lives in STATE_DIR: home/ is the server's HOME (~/.sky state and config,
# ~/.slurm/config, the SSH key, ~/skypilot-runtime -> the venv), nodes/ is SkyPilot's Slurm workdir
# (each cluster's HOME), sshd/, bin/ (the node PATH: the uv shim `curl`, python3.10), slurm/ (the
# cluster, when this script starts one), net-guard.log, and logs. The only files outside it are the
# venv and /etc/profile.d/qec-kiln-sky-local.sh (inert unless KILN_SKY_LOCAL_STATE is set, which
# only this sshd's sessions have).
#
# No traffic off loopback: SkyPilot's internet probe (_TEST_IP_LIST, HEAD https://8.8.8.8) is
# pointed at the API server's own /api/health; usage collection is off; its daily "latest version"
# look-up on pypi.org finds a fresh cache; the node's `curl` answers
# SkyPilot's uv install URL with a copy of the venv's uv and refuses (and logs) any other
# non-loopback URL; the venv's interpreter logs every non-loopback socket.connect (net_guard.py) to
# STATE_DIR/net-guard.log. Nodes install packages from the package index (the one allowed traffic).
#
# Knobs: KILN_SKY_VENV, KILN_SKY_SLURM_CONF (share a running cluster), KILN_SKY_SSH_PORT (first
# port tried, default 2222), KILN_SKY_API_PORT (default 46580), KILN_SKY_PYTHON310 (a python3.10).
set -euo pipefail
# log, die, require_root, apt_install, alive, port_busy, pid_in, show_usage: .ci/lib.sh
# shellcheck source=.ci/lib.sh
. "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/lib.sh"

HERE=$(cd "$(dirname "$0")" && pwd)
VENV=${KILN_SKY_VENV:-$HERE/.sky-venv}
SKY_VERSION=0.14.1
PROFILE_D=/etc/profile.d/qec-kiln-sky-local.sh
usage() { show_usage 2,16; }
need_root() { require_root "(sshd and the Slurm daemons run as root)"; }

# ---------------------------------------------------------------------------------------------
# install
# ---------------------------------------------------------------------------------------------
backend_utils() { echo "$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/sky/backends/backend_utils.py"; }

cmd_install() {
    need_root
    # The versions CI passed with (the repository's lock, `make lock`), when there is one.
    local LOCKED=()
    [[ ! -f $HERE/../constraints.txt ]] || LOCKED=(--constraint "$HERE/../constraints.txt")
    local missing=()
    command -v slurmctld >/dev/null || missing+=(slurm-wlm)
    command -v munged >/dev/null || missing+=(munge)
    [[ -x /usr/sbin/sshd ]] || missing+=(openssh-server)
    command -v rsync >/dev/null || missing+=(rsync)
    if ((${#missing[@]})); then
        command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
        apt_install "${missing[@]}"
    fi
    if [[ ! -x $VENV/bin/sky ]] || ! "$VENV/bin/python" -c \
            "import sky, sys; sys.exit(sky.__version__ != '$SKY_VERSION')" 2>/dev/null; then
        log "creating $VENV with skypilot[slurm]==$SKY_VERSION and uv (about 2 minutes)"
        python3 -m venv "$VENV"
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${LOCKED[@]}" \
            "skypilot[slurm]==$SKY_VERSION" uv >/dev/null 2>"$VENV.pip.log" \
            || { tail -n 20 "$VENV.pip.log" >&2; die "pip install skypilot[slurm] failed"; }
    fi
    [[ -x $VENV/bin/uv ]] || "$VENV/bin/python" -m pip install --quiet "${LOCKED[@]}" uv
    # 1. SkyPilot's internet probe, on loopback: the API server's health URL answers it.
    local bu
    bu=$(backend_utils)
    if grep -q "^_TEST_IP_LIST = \['https://8.8.8.8', 'https://1.1.1.1'\]" "$bu"; then
        sed -i "s|^_TEST_IP_LIST = \['https://8.8.8.8', 'https://1.1.1.1'\]|_TEST_IP_LIST = ['http://127.0.0.1:' + os.environ.get('SKYPILOT_API_SERVER_LOCAL_PORT', '46580') + '/api/health']  # qec-kiln .ci/sky-local.sh|" "$bu"
    fi
    grep -q "qec-kiln .ci/sky-local.sh" "$bu" || die "could not patch _TEST_IP_LIST in $bu"
    # 1b. Every cluster's skylet on a port of its own. All the clusters of this Slurm infra run on
    #     this one host, and each skylet takes the first free port from 46590 (SkyPilot's
    #     "race conditions can only happen on Slurm" TODO in attempt_skylet.py): clusters that
    #     start together all pick 46590, all but one fail to bind, and Slurm's skylet keeper
    #     restarts them every few seconds for the cluster's whole life (each start imports SkyPilot:
    #     most of a core on 2 cores). Start the search at a port derived from the cluster's own
    #     runtime folder instead (nothing connects to a Slurm cluster's skylet port: SkyPilot uses
    #     gRPC for no Slurm cluster). The clusters install this venv's SkyPilot (a wheel of it).
    local sk
    sk="$(dirname "$bu")/../skylet/attempt_skylet.py"
    if grep -q "^    port = common_utils.find_free_port(constants.SKYLET_GRPC_PORT)$" "$sk"; then
        sed -i "s|^    port = common_utils.find_free_port(constants.SKYLET_GRPC_PORT)$|    port = common_utils.find_free_port(constants.SKYLET_GRPC_PORT + 1 + __import__('zlib').crc32(os.path.abspath(PORT_FILE).encode()) % 4000)  # qec-kiln .ci/sky-local.sh|" "$sk"
    fi
    grep -q "qec-kiln .ci/sky-local.sh" "$sk" || die "could not patch the skylet port in $sk"
    # 1c. The jobs controller's polls, for 2 cores that also run every cluster. Each check of a
    #     running job's status is an SSH command that starts a Python importing SkyPilot on the
    #     "node" (this machine): every 15 s per job it took about a third of a core in the tests,
    #     so every 30 s here (a state change is seen up to 15 s later; a job whose checks keep
    #     failing is declared unhealthy after about 150 s instead of 75). A job queued on a busy pool
    #     asks for a worker every second (a database round and a logged traceback each time):
    #     every 5 s here.
    local ju rs
    ju="$(dirname "$bu")/../jobs/utils.py"
    rs="$(dirname "$bu")/../jobs/recovery_strategy.py"
    sed -i "s|^JOB_STATUS_CHECK_GAP_SECONDS = 15$|JOB_STATUS_CHECK_GAP_SECONDS = 30  # qec-kiln .ci/sky-local.sh|" "$ju"
    grep -q "^JOB_STATUS_CHECK_GAP_SECONDS = 30  # qec-kiln .ci/sky-local.sh" "$ju" \
        || die "could not patch JOB_STATUS_CHECK_GAP_SECONDS in $ju"
    sed -i "s|^                               if self.pool is None else 1)$|                               if self.pool is None else 5)  # qec-kiln .ci/sky-local.sh|" "$rs"
    grep -q "if self.pool is None else 5)  # qec-kiln .ci/sky-local.sh" "$rs" \
        || die "could not patch the pool's retry gap in $rs"
    # 2. The network guard in every interpreter of the venv.
    local site
    site=$(dirname "$(dirname "$(dirname "$bu")")")
    install -m 644 "$HERE/net_guard.py" "$site/kiln_net_guard.py"
    echo "import kiln_net_guard" >"$site/kiln_net_guard.pth"
    # 3. The node's login shells put STATE_DIR/bin first (only under this script's sshd).
    cat >"$PROFILE_D" <<'EOF'
# qec-kiln .ci/sky-local.sh: only in sessions of its loopback sshd (which sets KILN_SKY_LOCAL_STATE).
if [ -n "${KILN_SKY_LOCAL_STATE:-}" ] && [ -d "$KILN_SKY_LOCAL_STATE/bin" ]; then
    PATH="$KILN_SKY_LOCAL_STATE/bin:$PATH"
    export PATH SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt UV_NATIVE_TLS=1 UV_PYTHON_DOWNLOADS=never
    # One uv cache for every cluster of this state dir (a cloud VM starts with an empty one).
    export UV_CACHE_DIR="$KILN_SKY_LOCAL_STATE/uv-cache"
    [ -f "$KILN_SKY_LOCAL_STATE/slurm.env" ] && . "$KILN_SKY_LOCAL_STATE/slurm.env"
fi
EOF
}

# ---------------------------------------------------------------------------------------------
# start
# ---------------------------------------------------------------------------------------------
set_paths() {
    [[ -n ${1:-} ]] || usage
    STATE=$(realpath -m -- "$1")
    H=$STATE/home
    SSHD=$STATE/sshd
    BIN=$STATE/bin
    LOGS=$STATE/log
    GUARD=$STATE/net-guard.log
    SERVER_PID=$STATE/api-server.pid
}

python310() {
    local p=${KILN_SKY_PYTHON310:-}
    if [[ -z $p ]] && command -v pyenv >/dev/null; then
        local v
        v=$(pyenv versions --bare 2>/dev/null | grep -E '^3\.10\.[0-9]+$' | sort -V | tail -n 1 || true)
        [[ -n $v ]] && p="$(pyenv prefix "$v")/bin/python3.10"
    fi
    [[ -n $p ]] || p=$(command -v python3.10 || true)
    [[ -n $p && -x $p ]] || die "SkyPilot's node runtime needs a python3.10 (uv venv --python 3.10); set KILN_SKY_PYTHON310"
    echo "$p"
}

write_bin() {
    mkdir -p "$BIN"
    ln -sfn "$(python310)" "$BIN/python3.10"
    # SkyPilot runs `curl -LsSf https://astral.sh/uv/install.sh | UV_INSTALL_DIR=... sh` on every new
    # cluster: answer it with a copy of the venv's uv; never fetch anything off loopback.
    cat >"$BIN/curl" <<EOF
#!/bin/sh
for a in "\$@"; do
    case \$a in
        https://astral.sh/uv/install.sh)
            echo 'd="\${UV_INSTALL_DIR:-\$HOME/.local/bin}"; mkdir -p "\$d" && cp "$VENV/bin/uv" "\$d/uv" && echo "uv installed from $VENV"'
            exit 0 ;;
        http://127.*|https://127.*|http://localhost*|https://localhost*|file:*) ;;
        http://*|https://*|ftp://*)
            echo "\$(date +%s) curl \$*" >>"$GUARD"
            echo "curl (qec-kiln sky-local): refusing \$a (no traffic off loopback)" >&2
            exit 7 ;;
    esac
done
exec /usr/bin/curl "\$@"
EOF
    chmod 755 "$BIN/curl"
}

start_sshd() {
    local pid
    pid=$(pid_in "$SSHD/sshd.pid")
    if [[ -n $pid ]] && alive "$pid"; then return 0; fi
    mkdir -p "$SSHD" "$H/.ssh" /run/sshd
    chmod 700 "$H/.ssh"
    [[ -s $SSHD/host_ed25519 ]] || ssh-keygen -q -t ed25519 -N '' -f "$SSHD/host_ed25519"
    [[ -s $H/.ssh/sky-key ]] || ssh-keygen -q -t ed25519 -N '' -f "$H/.ssh/sky-key"
    install -m 600 "$H/.ssh/sky-key.pub" "$SSHD/authorized_keys"
    local port=${KILN_SKY_SSH_PORT:-2222} tries=0
    while port_busy "$port"; do
        port=$((port + 1)); tries=$((tries + 1))
        ((tries < 50)) || die "no free SSH port from ${KILN_SKY_SSH_PORT:-2222} on"
    done
    cat >"$SSHD/sshd_config" <<EOF
# Written by .ci/sky-local.sh: SkyPilot's "login node" of the local Slurm, on loopback only.
ListenAddress 127.0.0.1
Port $port
HostKey $SSHD/host_ed25519
PidFile $SSHD/sshd.pid
AuthorizedKeysFile $SSHD/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
X11Forwarding no
PrintMotd no
AcceptEnv LANG LC_*
# Non-login commands (SkyPilot's rsync and srun) see these; login shells get PATH back from
# $PROFILE_D.
SetEnv KILN_SKY_LOCAL_STATE=$STATE SLURM_CONF=$SLURM_CONF_PATH PATH=$BIN:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
Subsystem sftp internal-sftp
EOF
    echo "$port" >"$SSHD/port"
    KILN_SKY_LOCAL_STATE=$STATE /usr/sbin/sshd -f "$SSHD/sshd_config" -E "$LOGS/sshd.log" \
        || die "sshd did not start; see $LOGS/sshd.log"
    local i
    for ((i = 0; i < 50; i++)); do
        port_busy "$port" && return 0
        sleep 0.1
    done
    die "sshd does not listen on 127.0.0.1:$port; see $LOGS/sshd.log"
}

write_home() {
    local port
    port=$(cat "$SSHD/port")
    mkdir -p "$H/.sky" "$H/.slurm" "$STATE/nodes"
    ln -sfn "$VENV" "$H/skypilot-runtime"  # the jobs scheduler sources its bin/activate
    cat >"$H/.slurm/config" <<EOF
Host localslurm
    HostName 127.0.0.1
    Port $port
    User root
    IdentityFile $H/.ssh/sky-key
    StrictHostKeyChecking no
    UserKnownHostsFile /dev/null
    LogLevel ERROR
EOF
    chmod 600 "$H/.slurm/config"
    # The API server asks pypi.org for SkyPilot's latest version once a day (server/version_check.py)
    # unless ~/.sky/version_cache.json is fresh: a cache dated 10 years ahead keeps it on loopback.
    printf '{"release_version": "%s", "cached_at": %s}\n' "$SKY_VERSION" \
        "$(($(date +%s) + 315360000))" >"$H/.sky/version_cache.json"
    cat >"$H/.sky/config.yaml" <<EOF
# Written by .ci/sky-local.sh: no cloud, the jobs controller inside the API server.
allowed_clouds: [slurm]
jobs:
  controller:
    consolidation_mode: true
slurm:
  # A cluster whose allocation waits in Slurm's queue (more clusters than CPUs at once) waits for
  # it instead of failing over after SkyPilot's default 2 minutes.
  provision_timeout: 900
  cluster_configs:
    localslurm:
      workdir: $STATE/nodes
EOF
}

server_env() {
    # The environment of everything SkyPilot runs on this side (server, controllers, CLI).
    SERVER_ENV=(HOME="$H" SKYPILOT_DISABLE_USAGE_COLLECTION=1 SKYPILOT_API_SERVER_LOCAL_PORT="$API_PORT"
        KILN_NET_GUARD_LOG="$GUARD" KILN_SKY_LOCAL_STATE="$STATE"
        PATH="$VENV/bin:$PATH" SLURM_CONF="$SLURM_CONF_PATH")
    env "${SERVER_ENV[@]}" "$@"
}

healthy() {
    "$VENV/bin/python" - "$API_PORT" <<'EOF' 2>/dev/null
import sys, urllib.request
with urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/api/health", timeout=2) as r:
    sys.exit(0 if r.status == 200 else 1)
EOF
}

start_server() {
    local pid
    pid=$(pid_in "$SERVER_PID")
    if [[ -n $pid ]] && alive "$pid" && healthy; then return 0; fi
    server_env true
    port_busy "$API_PORT" && die "127.0.0.1:$API_PORT is taken by another process (an API server \
not started by this script?); stop it, or set KILN_SKY_API_PORT"
    # Its own session: `stop` signals the whole group; `--foreground` keeps the server this pid.
    # (exec ...) &: $! is the server's own pid (env, setsid and sky exec in turn).
    (exec env "${SERVER_ENV[@]}" setsid "$VENV/bin/sky" api start --foreground \
        >"$LOGS/api-server.log" 2>&1 </dev/null) &
    echo $! >"$SERVER_PID"
    local i
    for ((i = 0; i < 240; i++)); do
        healthy && return 0
        alive "$(pid_in "$SERVER_PID")" || break
        sleep 0.5
    done
    tail -n 30 "$LOGS/api-server.log" >&2
    die "the API server did not answer on 127.0.0.1:$API_PORT"
}

client_exports() {
    printf 'export SKYPILOT_API_SERVER_ENDPOINT=%q\n' "http://127.0.0.1:$API_PORT"
    printf 'export SKYPILOT_API_SERVER_LOCAL_PORT=%q\n' "$API_PORT"
    printf 'export SKYPILOT_DISABLE_LOCAL_API_SERVER=1\n'  # never a second server from a client
    printf 'export SKYPILOT_DISABLE_USAGE_COLLECTION=1\n'
    printf 'export KILN_NET_GUARD_LOG=%q\n' "$GUARD"
    printf 'export SLURM_CONF=%q\n' "$SLURM_CONF_PATH"
}

cmd_start() {
    need_root
    set_paths "${1:-}"
    [[ -x $VENV/bin/sky ]] || die "$VENV has no SkyPilot; run: $0 install"
    grep -q "qec-kiln .ci/sky-local.sh" "$(backend_utils)" || die "$VENV is not patched; run: $0 install"
    [[ -x /usr/sbin/sshd ]] && command -v rsync >/dev/null || die "sshd/rsync missing; run: $0 install"
    [[ -f $PROFILE_D ]] || die "$PROFILE_D missing; run: $0 install"
    mkdir -p "$STATE" "$LOGS"
    chmod 755 "$STATE"
    touch "$GUARD"
    API_PORT=${KILN_SKY_API_PORT:-46580}
    echo "$API_PORT" >"$STATE/api-port"
    if [[ -n ${KILN_SKY_SLURM_CONF:-} ]]; then
        SLURM_CONF_PATH=$KILN_SKY_SLURM_CONF
        [[ -s $SLURM_CONF_PATH ]] || die "KILN_SKY_SLURM_CONF=$SLURM_CONF_PATH is not a file"
    else
        eval "$(bash "$HERE/slurm.sh" up "$STATE/slurm")"
        SLURM_CONF_PATH=$SLURM_CONF
        touch "$STATE/slurm.ours"
    fi
    printf 'export SLURM_CONF=%q\n' "$SLURM_CONF_PATH" >"$STATE/slurm.env"
    write_bin
    start_sshd
    write_home
    start_server
    # Enable the Slurm infra (SkyPilot caches which clouds pass their check).
    server_env "$VENV/bin/sky" check slurm >"$LOGS/sky-check.log" 2>&1 \
        || { cat "$LOGS/sky-check.log" >&2; die "sky check slurm failed"; }
    grep -qi "slurm.*enabled\|enabled.*slurm" "$LOGS/sky-check.log" \
        || { cat "$LOGS/sky-check.log" >&2; die "sky check: the Slurm infra is not enabled"; }
    log "SkyPilot $SKY_VERSION API server on 127.0.0.1:$API_PORT, Slurm infra via sshd 127.0.0.1:$(cat "$SSHD/port") ($STATE)"
    client_exports
}

cmd_env() {
    set_paths "${1:-}"
    API_PORT=$(cat "$STATE/api-port")
    # shellcheck disable=SC1091
    . "$STATE/slurm.env"
    SLURM_CONF_PATH=$SLURM_CONF
    client_exports
}

# ---------------------------------------------------------------------------------------------
# stop
# ---------------------------------------------------------------------------------------------
# Processes started for this STATE_DIR: their environment holds KILN_SKY_LOCAL_STATE=$STATE (the
# API server and its controllers, sshd and every session, srun'd node processes).
marked_pids() {
    local p pid env
    for p in /proc/[0-9]*; do
        pid=${p#/proc/}
        [[ $pid == "$$" || $pid == "$BASHPID" || $pid == "$PPID" ]] && continue
        env=$'\n'$({ tr '\0' '\n' <"$p/environ"; } 2>/dev/null)$'\n' || continue
        if [[ $env == *$'\n'"KILN_SKY_LOCAL_STATE=$STATE"$'\n'* ]]; then echo "$pid"; fi
    done
    return 0
}

# Processes holding a TCP connection from or to 127.0.0.1:PORT (this sshd's sessions, and SkyPilot's
# ssh ControlMaster processes connected to it: both rewrite their environment for their title).
socket_pids() {
    local hex inodes p fd link
    hex=$(printf '%04X' "$1")
    inodes=$(awk -v h=":$hex" 'FNR > 1 && (substr($2, length($2) - 4) == h || substr($3, length($3) - 4) == h) {print $10}' \
        /proc/net/tcp /proc/net/tcp6 2>/dev/null | sort -u | tr '\n' ' ')
    [[ -n ${inodes// /} ]] || return 0
    for p in /proc/[0-9]*; do
        for fd in "$p"/fd/*; do
            link=$(readlink "$fd" 2>/dev/null) || continue
            if [[ $link == socket:\[*\] && " $inodes " == *" ${link:8:-1} "* ]]; then
                echo "${p#/proc/}"
                break
            fi
        done
    done
    return 0
}

stop_group() {
    local pid=$1 i
    [[ -n $pid ]] && alive "$pid" || return 0
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        alive "$pid" || return 0
        sleep 0.1
    done
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
}

cmd_stop() {
    set_paths "${1:-}"
    [[ -d $STATE ]] || return 0
    need_root
    # 1. The API server (and its controllers) first, so nothing relaunches.
    stop_group "$(pid_in "$SERVER_PID")"
    rm -f "$SERVER_PID"
    # 2. The Slurm allocations of SkyPilot's clusters (named after the clusters in nodes/).
    local names jobs
    names=$(find "$STATE/nodes/.sky_clusters" -mindepth 1 -maxdepth 1 -printf '%f\n' 2>/dev/null || true)
    if [[ -f $STATE/slurm.env ]]; then
        # shellcheck disable=SC1091
        . "$STATE/slurm.env"
        if [[ -n $names ]]; then
            jobs=$(squeue -h -o '%i %j' 2>/dev/null | awk -v n="$names" \
                'BEGIN{split(n, a, "\n"); for (i in a) want[a[i]] = 1} ($2 in want) {print $1}' || true)
            # shellcheck disable=SC2086
            [[ -z $jobs ]] || scancel $jobs >/dev/null 2>&1 || true
        fi
    fi
    # 3. Everything else this state dir started (sshd, sessions, node processes), by pid.
    local pid left
    pid=$(pid_in "$SSHD/sshd.pid")
    [[ -n $pid ]] && alive "$pid" && kill -TERM "$pid" 2>/dev/null || true
    sleep 0.5
    left="$(marked_pids | tr '\n' ' ') "
    [[ ! -s $SSHD/port ]] || left+=$(socket_pids "$(cat "$SSHD/port")" | tr '\n' ' ')
    # shellcheck disable=SC2086
    [[ -z ${left// /} ]] || kill -KILL $left 2>/dev/null || true
    rm -f "$SSHD/sshd.pid"
    # 4. SkyPilot's node-local runtime folders of these clusters (Slurm tmpdir, default /tmp):
    #    the next state dir's clusters get the same names (kiln-<sweep>-<job id>-<user hash>).
    local name
    for name in $names; do
        if [[ $name =~ ^[A-Za-z0-9._-]+$ && -d /tmp/$name/.sky ]]; then rm -rf "/tmp/$name"; fi
    done
    # 5. The Slurm cluster, when start started it.
    if [[ -f $STATE/slurm.ours ]]; then
        bash "$HERE/slurm.sh" down "$STATE/slurm" || true
        rm -f "$STATE/slurm.ours"
    fi
}

case ${1:-} in
    install) cmd_install ;;
    start) cmd_start "${2:-}" ;;
    stop) cmd_stop "${2:-}" ;;
    env) cmd_env "${2:-}" ;;
    *) usage ;;
esac
