#!/bin/sh
# Install Connecfy into ./.venv (with the test tools when given --test).
# Works on a fresh Debian with only Python 3.11+: Debian ships venv separately, so
# python3-venv is installed with apt-get (as root, or through sudo) when it is missing.
set -eu
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "install.sh: Connecfy needs Python 3.11 or newer ($PYTHON is $("$PYTHON" -V 2>&1))" >&2
    exit 1
fi

if [ ! -x .venv/bin/python ]; then
    if ! "$PYTHON" -m venv .venv >/dev/null 2>&1; then
        rm -rf .venv
        SUDO=""
        [ "$(id -u)" -eq 0 ] || SUDO="sudo"
        echo "install.sh: installing python3-venv with apt-get" >&2
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null
        "$PYTHON" -m venv .venv
    fi
fi

EXTRAS=""
[ "${1:-}" = "--test" ] && EXTRAS="[test]"
.venv/bin/python -m pip install --quiet --disable-pip-version-check --editable ".$EXTRAS"
