#!/usr/bin/env bash
# The headless browser the page tests drive (Debian/Ubuntu, run as root): Debian's chromium and its
# chromedriver, nothing downloaded by a test tool.
#
#   .ci/browser.sh install   apt-get install chromium chromium-driver, only if either is missing
#   .ci/browser.sh check     exit 0 when /usr/bin/chromium and /usr/bin/chromedriver run
#
# The tests start chromium with --headless --no-sandbox --disable-gpu and every background
# service off (tests/fixtures_browser.py): these machines have no internet.
set -euo pipefail
export PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin

SELF=$(basename "$0")
log() { printf '%s: %s\n' "$SELF" "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
    sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

have_browser() { [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]]; }

cmd_install() {
    have_browser && return 0
    [[ $(id -u) -eq 0 ]] || die "must run as root to apt-get install chromium chromium-driver"
    command -v apt-get >/dev/null || die "chromium is missing and there is no apt-get to install it"
    local out
    out=$(mktemp)
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
            -o Dpkg::Use-Pty=0 --no-install-recommends chromium chromium-driver; } >"$out" 2>&1; then
        tail -n 40 "$out" >&2
        rm -f "$out"
        die "apt-get install chromium chromium-driver failed"
    fi
    rm -f "$out"
    have_browser || die "chromium installed but /usr/bin/chromium or /usr/bin/chromedriver is missing"
}

cmd_check() {
    have_browser || die "no /usr/bin/chromium or /usr/bin/chromedriver (run: sudo $0 install)"
    /usr/bin/chromedriver --version >/dev/null
    /usr/bin/chromium --headless --no-sandbox --version >/dev/null
}

case ${1:-} in
    install) cmd_install ;;
    check) cmd_check ;;
    *) usage ;;
esac
