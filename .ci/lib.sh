# shellcheck shell=bash
# Helpers shared by .ci/slurm.sh, .ci/sky-local.sh and .ci/browser.sh, which source this file from
# their own folder (a symlink to a script is followed):
#   . "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/lib.sh"
# It only defines functions (and adds the sbin folders to PATH); it runs nothing.

export PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin

SELF=$(basename "$0")
log() { printf '%s: %s\n' "$SELF" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# show_usage FIRST,LAST: the script's own comment lines FIRST to LAST, without their '# ', on
# stderr; exit 2.
show_usage() {
    sed -n "${1}p" "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

# require_root WHY: die "must run as root WHY" unless this is root.
require_root() { [[ $(id -u) -eq 0 ]] || die "must run as root $1"; }

# apt_install [APT-OPTION...] PACKAGE...: apt-get update and install, quietly; on failure the last
# 40 lines of apt's output, then die "apt-get install PACKAGE... failed".
apt_install() {
    local out arg opts=() pkgs=()
    for arg in "$@"; do
        if [[ $arg == -* ]]; then opts+=("$arg"); else pkgs+=("$arg"); fi
    done
    out=$(mktemp)
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            -o Dpkg::Use-Pty=0 "${opts[@]}" "${pkgs[@]}"; } >"$out" 2>&1; then
        tail -n 40 "$out" >&2
        rm -f "$out"
        die "apt-get install ${pkgs[*]} failed"
    fi
    rm -f "$out"
}

# alive PID: the process exists and is not a zombie (an exited daemon whose parent, often init in
# a container, has not reaped it yet).
alive() {
    local stat
    stat=$({ cat "/proc/$1/stat"; } 2>/dev/null) || return 1
    stat=${stat##*) }
    [[ -n $stat && ${stat:0:1} != Z && ${stat:0:1} != X ]]
}

# port_busy PORT: something listens on 127.0.0.1:PORT.
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# pid_in PIDFILE: the digits of PIDFILE; empty when it is missing or empty.
pid_in() { if [[ -s $1 ]]; then tr -dc '0-9' <"$1"; fi; return 0; }
