#!/usr/bin/env bash
# Install everything the test suite needs (Debian packages and Python packages), then run ruff and pytest.
# Usage: bash tests/setup-and-run.sh [pytest arguments...]
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# tshark is the reassembly oracle, tcpdump the benchmark baseline, libpcap the fast capture path.
DEBIAN_PACKAGES=(tshark tcpdump libpcap0.8)
missing=()
for package in "${DEBIAN_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

python3 -m pip install --quiet --disable-pip-version-check -e '.[test]'

ruff check .
python3 -m pytest "$@"
