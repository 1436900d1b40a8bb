#!/bin/sh
# Install Connecfy into ./.venv; with --test, also the test tools and every system
# package the tests need.
# Works on a fresh Debian with only Python 3.11+: Debian ships venv separately, so
# python3-venv is installed with apt-get (as root, or through sudo) when it is missing.
# With --test, the Debian packages below are installed the same way, only those that are
# missing (a run with all of them present asks dpkg and nothing else); without apt-get
# they are skipped with a message, and the tests that need them skip (or fail under CI).
set -eu
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"

# What the tests run besides Python: real Redis 7 and redis-cli (the cluster test), curl
# (the API walk-through in docs/api.md), wrk (the load bench's baselines), chromium (the dashboard
# tests), PostgreSQL's server binaries (the history tests start their own cluster), and a
# JDK with JUnit 4 and Android's org.json (the Android client's core), systemd's
# systemd-analyze (deploy/'s unit is verified), and Prometheus with its promtool (deploy/monitoring's
# alert rules and example configuration are checked, and loaded into a real Prometheus).
TEST_PACKAGES="redis-server redis-tools curl wrk chromium postgresql default-jdk-headless junit4 libandroid-json-org-java systemd prometheus"

TEST=""
case "${1:-}" in
    "") ;;
    --test) TEST=1 ;;
    *) echo "usage: $0 [--test]" >&2; exit 2 ;;
esac

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "install.sh: Connecfy needs Python 3.11 or newer ($PYTHON is $("$PYTHON" -V 2>&1))" >&2
    exit 1
fi

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
APT_UPDATED=""

# apt_install PACKAGE...: one `apt-get update` per run, then install the packages.
apt_install() {
    if [ -n "$SUDO" ] && ! command -v sudo >/dev/null; then
        echo "install.sh: apt-get install $* needs root, and there is no sudo: run it as root" >&2
        return 1
    fi
    if [ -z "$APT_UPDATED" ]; then
        $SUDO apt-get update -qq
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

# missing_packages PACKAGE...: those of the packages dpkg does not have installed.
missing_packages() {
    for package in "$@"; do
        status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$package" 2>/dev/null) || status=""
        case "$status" in
            ii*) ;;
            *) printf '%s ' "$package" ;;
        esac
    done
}

if [ ! -x .venv/bin/python ]; then
    if ! "$PYTHON" -m venv .venv >/dev/null 2>&1; then
        rm -rf .venv
        if ! command -v apt-get >/dev/null; then
            echo "install.sh: '$PYTHON -m venv' does not work here and there is no apt-get to install python3-venv" >&2
            exit 1
        fi
        echo "install.sh: installing python3-venv with apt-get" >&2
        apt_install python3-venv
        "$PYTHON" -m venv .venv
    fi
fi

if [ -n "$TEST" ]; then
    if ! command -v apt-get >/dev/null || ! command -v dpkg-query >/dev/null; then
        echo "install.sh: no apt-get here; skipping the system packages the tests need" >&2
        echo "install.sh: (on Debian: apt-get install $TEST_PACKAGES)" >&2
    else
        MISSING=$(missing_packages $TEST_PACKAGES)
        if [ -n "$MISSING" ]; then
            echo "install.sh: installing with apt-get: ${MISSING% }" >&2
            # shellcheck disable=SC2086  # one word per package
            apt_install $MISSING
        fi
    fi
fi

# With --test, also the Python SDK (sdk/python, a package of its own), which tests/sdk
# drive against a real server; one pip run resolves both.
EXTRAS=""
SDK=""
if [ -n "$TEST" ]; then
    EXTRAS="[test]"
    SDK="./sdk/python"
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --editable ".$EXTRAS" ${SDK:+--editable "$SDK"}
