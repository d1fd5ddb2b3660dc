#!/usr/bin/env bash
# Install everything the test suite needs (Debian packages and Python packages), then run ruff, the import
# contracts and pytest.
# Usage: bash tests/setup-and-run.sh [pytest arguments...]
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# tshark is the reassembly oracle, tcpdump the benchmark baseline, libpcap the fast capture path; editcap (in
# wireshark-common) corrupts captures for the hardening tests; the mail servers, Samba AD DC and mail clients are
# what the probe and monitoring tests run in network namespaces (Apache with mod_auth_gssapi and gss-ntlmssp is the
# HTTP NTLM/Negotiate server in front of the DC: Debian 12 has no mod_auth_ntlm_winbind); nmap is the probe's
# oracle; tcpreplay replays captures onto a veth; chromium renders and prints the HTML report, poppler-utils
# (pdfinfo, pdftotext) reads the PDFs; Redis and vsftpd are the other protocols on mail ports that must not be
# taken for mail (tests/test_verdicts_lab.py); gcc and the Python headers build the compiled packet scanner, which
# tests/test_scanner.py checks against its pure-Python twin; GNU time measures a command's own peak RSS; zstd and xz
# write the compressed captures the compressed-stream tests cut short.
DEBIAN_PACKAGES=(
  tshark tcpdump libpcap0.8 wireshark-common iproute2 util-linux openssl ca-certificates
  postfix dovecot-core dovecot-pop3d dovecot-imapd samba samba-ad-dc samba-ad-provision samba-dsdb-modules winbind
  apache2 libapache2-mod-auth-gssapi gss-ntlmssp
  swaks libauthen-ntlm-perl libnet-ssleay-perl libio-socket-ssl-perl fetchmail curl
  nmap tcpreplay chromium chromium-driver poppler-utils
  redis-server vsftpd
  gcc libc6-dev python3-dev time zstd xz-utils
)
missing=()
for package in "${DEBIAN_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
  # Postfix asks how to configure itself; the tests bring their own configuration.
  echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

python3 -m pip install --quiet --disable-pip-version-check -e '.[test]'

ruff check .
lint-imports  # the layering contracts of docs/architecture.md (pyproject.toml)
python3 -m pytest "$@"
