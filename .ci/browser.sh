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
# log, die, require_root, apt_install, show_usage: .ci/lib.sh
# shellcheck source=.ci/lib.sh
. "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/lib.sh"

usage() { show_usage 2,6; }

have_browser() { [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]]; }

cmd_install() {
    have_browser && return 0
    require_root "to apt-get install chromium chromium-driver"
    command -v apt-get >/dev/null || die "chromium is missing and there is no apt-get to install it"
    apt_install --no-install-recommends chromium chromium-driver
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
