# shellcheck shell=bash
# Shared setup for scripts/test and scripts/demo: system packages and the venv.
# Sourced, so it only defines things; the caller has set -euo pipefail.

# System packages the lab needs (servers are run by the lab itself, not the OS).
# postfix/dovecot serve the mail lab from configs under .lab/, never /etc;
# iptables makes the "filtered" scenarios drop packets; redis-server backs
# the bot's queue in tests (run from a config under .lab/redis, never the
# system service, which policy-rc.d below keeps from starting); nginx-light
# serves the lab's MTA-STS policies from .lab/web; opendkim signs the mail the
# lab sends to the send test's receiver (run from a config under .lab/mail).
APT_PACKAGES=(
    nsd dnsutils python3 python3-venv
    postfix dovecot-core dovecot-imapd dovecot-pop3d dovecot-lmtpd iptables
    redis-server nginx-light opendkim
)

# Answers for packages that would otherwise ask (postfix asks for a mail
# setup; "No configuration" leaves /etc/postfix/main.cf unwritten).
DEBCONF_SELECTIONS=(
    "postfix postfix/main_mailer_type select No configuration"
    "postfix postfix/mailname string localhost"
)

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

die() {
    echo "error: $*" >&2
    exit 1
}

as_root() {
    if [[ $EUID -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        die "need root to run: $* (run as root or install sudo)"
    fi
}

missing_packages() {
    local pkg
    for pkg in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || echo "$pkg"
    done
}

install_packages() {
    local missing
    mapfile -t missing < <(missing_packages)
    [[ ${#missing[@]} -eq 0 ]] && return 0
    command -v apt-get >/dev/null || die "apt-get not found; install these by hand: ${missing[*]}"
    echo "Installing: ${missing[*]}"

    # Debian starts a daemon's system service on install; a system nsd would
    # grab port 53 on every address, including the lab's, and a system
    # postfix/dovecot ports 25, 143, 993..., a system redis-server port 6379
    # on 127.0.0.1 (harmless, but not ours to run). policy-rc.d exit 101 tells
    # invoke-rc.d not to start anything.
    # An existing policy-rc.d that allows starts is set aside meanwhile.
    local policy=/usr/sbin/policy-rc.d saved=/usr/sbin/policy-rc.d.mailcheck-saved
    local created=0 rc=0
    if [[ ! -e $policy ]] || ! grep -qx 'exit 101' "$policy"; then
        if [[ -e $policy ]]; then
            as_root mv "$policy" "$saved"
        fi
        printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
        as_root chmod 755 "$policy"
        created=1
    fi
    {
        printf '%s\n' "${DEBCONF_SELECTIONS[@]}" | as_root debconf-set-selections &&
            as_root apt-get update -q &&
            as_root env DEBIAN_FRONTEND=noninteractive \
                apt-get install -y -q --no-install-recommends "${missing[@]}"
    } || rc=$?
    if [[ $created -eq 1 ]]; then
        as_root rm -f "$policy"
        if [[ -e $saved ]]; then
            as_root mv "$saved" "$policy"
        fi
    fi
    [[ $rc -eq 0 ]] || die "apt-get failed (exit $rc)"
}

setup_venv() {
    cd "$REPO_ROOT"
    [[ -x .venv/bin/python ]] || python3 -m venv .venv
    # A path in a .pth file ("compat" mode), not setuptools' import-hook finder:
    # loading the finder costs every Python start in .venv some 12 ms, which an
    # installed mailcheck does not pay. An older pip without the setting gets
    # the default kind of editable install.
    PIP_DISABLE_PIP_VERSION_CHECK=1 .venv/bin/pip install -q -e '.[dev]' \
        --config-settings editable_mode=compat ||
        PIP_DISABLE_PIP_VERSION_CHECK=1 .venv/bin/pip install -q -e '.[dev]'
}

setup() {
    install_packages
    setup_venv
}
