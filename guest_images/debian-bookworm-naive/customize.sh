#!/bin/sh
# Stock settings only: root filesystem in fstab, DHCP on eth0 via ifupdown, and nothing else.
set -eu
echo debian > /etc/hostname
printf '/dev/vda / ext4 rw,discard,errors=remount-ro 0 1\n' > /etc/fstab
printf 'auto lo\niface lo inet loopback\n\nsource /etc/network/interfaces.d/*\n' > /etc/network/interfaces
sed -i 's/^# *\(en_US.UTF-8 UTF-8\)/\1/' /etc/locale.gen && locale-gen >/dev/null
rm -f /customize.sh
