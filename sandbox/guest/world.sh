#!/bin/sh
# Build the vendor manual's world inside the test guest, from scratch:
#   VG "system" (made at boot), LV "xenvm" holding FSTYPE, mounted at /srv/xenvm, one VM
#   folder inside, an empty /mnt/vmbackup, and the hooks installed where sesam keeps them.
# Usage: world.sh FSTYPE(ext4|xfs) LAYOUT(thick|thin) PYTHON
set -eu
FSTYPE=$1 LAYOUT=$2 PYTHON=$3

# Undo whatever the previous test left: mounts below /mnt and /srv, every LV but the world's
# own (below), xenlvm's files. A hostfs mount there is this machine's own directory, bound
# back by init.sh (a checkout in /srv): it is neither unmounted nor emptied.
for mount in $(awk '$3 != "hostfs" && $2 ~ "^/(mnt|srv)/" {print $2}' /proc/mounts | sort -r); do
    umount "$mount" 2>/dev/null || umount -l "$mount"
done
pkill -9 -x xenlvm-hold || true
rm -rf /etc/xenlvm /run/xenlvm /var/lib/xenlvm /var/log/xenlvm.log /opt/sesam
kept=$(awk '$3 == "hostfs" && $2 ~ "^/(mnt|srv)/" {print $2}' /proc/mounts)
for entry in /mnt/* /srv/*; do
    [ -e "$entry" ] || [ -L "$entry" ] || continue  # a dangling link is removed too
    for path in $kept; do
        case "$path/" in "$entry"/*) continue 2 ;; esac
    done
    rm -rf "$entry"
done

# Fast path: when the world's volume is exactly as the last full build left it (same layout,
# same LVs with the same attributes, size and tags, no other device-mapper device), keep its
# filesystem and only empty it; a new filesystem costs a second here.
signature() {
    echo "$FSTYPE $LAYOUT"
    lvs --noheadings -o lv_name,lv_attr,lv_size,lv_tags --units b system 2>&1
    dmsetup ls 2>&1 | sort
    blkid -p -o value -s TYPE /dev/system/xenvm 2>&1
}
built=$(cat /run/world-signature 2>/dev/null || true)
now=$(signature || true)  # blkid fails before the first build
if [ "$now" != "$built" ]; then  # the test left LVs of its own (an LVM command costs 0.2 s here)
    lvremove -q -f -S 'lv_name!=xenvm && lv_name!=pool' system >/dev/null 2>&1 || true
    now=$(signature || true)
fi
mkdir -p /srv/xenvm /mnt/vmbackup
if [ -n "$built" ] && [ "$now" = "$built" ] && mount /dev/system/xenvm /srv/xenvm 2>/dev/null; then
    find /srv/xenvm -mindepth 1 -maxdepth 1 ! -name lost+found -exec rm -rf {} +
else
    rm -f /run/world-signature
    lvremove -q -f system >/dev/null 2>&1 || lvremove -q -f system
    if [ "$LAYOUT" = thin ]; then
        lvcreate -q -y -L 700M -T system/pool >/dev/null 2>&1
        lvcreate -q -y -V 320M -T system/pool -n xenvm >/dev/null 2>&1
    else
        lvcreate -q -y -L 320M -n xenvm system >/dev/null
    fi
    # ext4 without lazy init: no kernel thread writing to the origin behind the tests' backs.
    if [ "$FSTYPE" = ext4 ]; then
        mkfs.ext4 -q -E lazy_itable_init=0,lazy_journal_init=0 /dev/system/xenvm
    else
        mkfs -t "$FSTYPE" -f -q /dev/system/xenvm >/dev/null
    fi
    signature > /run/world-signature
    mount /dev/system/xenvm /srv/xenvm
fi
mkdir -p /srv/xenvm/vm1
head -c 4194304 /dev/urandom > /srv/xenvm/vm1/disk.img
printf 'name = "vm1"\ndisk = [ "file:/srv/xenvm/vm1/disk.img,xvda,w" ]\n' > /srv/xenvm/vm1/vm1.cfg

# The hooks as sesam has them: installed by xenlvm itself into /opt/sesam/bin/sesam, once per
# boot; later worlds get a copy of what it wrote (a Python start costs a second in the guest).
mkdir -p /opt/sesam/bin/sesam /etc/xenlvm
if [ -d /run/installed-hooks ]; then
    cp -p /run/installed-hooks/* /opt/sesam/bin/sesam/
else
    "$PYTHON" -m xenlvm install-hooks >/dev/null
    mkdir -p /run/installed-hooks && cp -p /opt/sesam/bin/sesam/* /run/installed-hooks/
fi
sync

# Fault injection wrappers (see guest/fault); inert until a test writes a rule. The links
# are made once per boot; the rules, counters and the calls log go with every world.
if [ ! -d /run/faults/bin ]; then
    mkdir -p /run/faults/bin
    fault="$(dirname "$0")/fault"
    for tool in lvs lvcreate lvremove lvchange mount umount blkid losetup partx cp thin_delta; do
        ln -s "$fault" "/run/faults/bin/$tool"
    done
fi
find /run/faults -mindepth 1 -maxdepth 1 ! -name bin -exec rm -rf {} +

# Xen: the stand-in xl (see guest/xl) in a directory of its own, with its state reset.
rm -rf /opt/xen /run/fake-xl /etc/xen
mkdir -p /opt/xen/bin /etc/xen
# Bound to our interpreter like the hooks: "#!/usr/bin/env python3" may find a slow shim.
# -S: it needs only the standard library, and site's start-up costs a tenth of a second here
# (Xen's own xl is a C program that starts in milliseconds).
{ echo "#!$PYTHON -S"; tail -n +2 "$(dirname "$0")/xl"; } > /opt/xen/bin/xl
chmod 0755 /opt/xen/bin/xl
