#!/usr/bin/env bash
# Installs the Autobahn TestSuite's `wstest` (Python 2.7 only) into ~/.local/bin, idempotently.
# Python 2.7 comes from pyenv when the machine has it, else from Debian 11 (bullseye), the
# last Debian release that packages it (needs root, as CI has).
set -euo pipefail
wstest="$HOME/.local/bin/wstest"
if [ -x "$wstest" ] && "$wstest" --help >/dev/null 2>&1; then
  exit 0
fi

find_python27() {
  local p
  for p in "$HOME"/.pyenv/versions/2.7*/bin/python2.7 /usr/bin/python2.7; do
    if [ -x "$p" ] && "$p" -c 'import sys; assert sys.version_info[:2] == (2, 7)' 2>/dev/null; then
      echo "$p"
      return 0
    fi
  done
  return 1
}

if ! py=$(find_python27); then
  if [ ! -f /etc/apt/sources.list.d/bullseye.sources ]; then
    # reuse the mirror this machine's own bookworm entry names
    uri=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources)
    printf 'Types: deb\nURIs: %s\nSuites: bullseye\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      "$uri" >/etc/apt/sources.list.d/bullseye.sources
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -t bullseye python2.7 python2.7-dev libpython2.7 >/dev/null
  py=$(find_python27)
fi
echo "install-autobahn: using $py" >&2

if ! "$py" -m pip --version >/dev/null 2>&1 || ! "$py" -m pip --version | grep -q '^pip 20'; then
  tmp=$(mktemp -d)
  python3 -m pip download -q --no-deps -d "$tmp" "pip==20.3.4"
  "$py" "$tmp"/pip-20.3.4-py2.py3-none-any.whl/pip install -q --user "$tmp"/pip-20.3.4-py2.py3-none-any.whl
fi
"$py" -m pip install -q --user --disable-pip-version-check "setuptools==44.1.1" "wheel==0.37.1"
"$py" -m pip install -q --user --disable-pip-version-check autobahntestsuite
"$wstest" --help >/dev/null
echo "install-autobahn: $wstest ready" >&2
