#!/bin/sh
# Install the Debian packages balloon-harness needs, if any is missing.
# As root it runs apt-get; otherwise it prints the exact command and fails.
set -eu
PACKAGES="qemu-system-x86 qemu-utils mmdebstrap debian-archive-keyring e2fsprogs libvirt-daemon-system libvirt-clients libvirt-dev pkg-config gcc python3-venv python3-dev procps"
missing=""
for p in $PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && { echo "system packages: all present"; exit 0; }
cmd="apt-get install -y --no-install-recommends$missing"
if [ "$(id -u)" -ne 0 ]; then
  echo "balloon-harness needs these Debian packages:$missing" >&2
  echo "Install them with:  sudo apt-get update && sudo $cmd" >&2
  exit 1
fi
echo "installing:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# shellcheck disable=SC2086
$cmd
