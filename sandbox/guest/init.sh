#!/bin/sh
# PID 1 of the User-Mode Linux test guest. The guest's root is this machine's filesystem
# (hostfs), so everything the guest could write is first hidden behind tmpfs or an overlay:
# the host is never changed, except the work directory XENLVM_WORK that the host gave us.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
WORK=$XENLVM_WORK
exec >"$WORK/guest-init.log" 2>&1
set -x
mount -t proc proc /proc
mount -t sysfs sys /sys
# Before anything else, and while the host's paths are all still visible: do this guest's
# processes keep their vector registers (sandbox/uml/vregcheck.c)? A guest that loses
# them computes wrong results, so it stops here and tells the host why.
if ! "$XENLVM_VREGCHECK" $XENLVM_VREGCHECK_ARGS >"$WORK/vregcheck.log" 2>&1; then
    echo unsound > "$WORK/guest-unsound"
    halt -f
    exit 1  # halt itself may not run in such a guest; PID 1 exiting stops the kernel too
fi
mount -t tmpfs -o mode=0755 tmpfs /run
# What is hidden, and what is bound back afterwards, the host decides
# (sandbox/guest_paths.py): tmpfs over XENLVM_HIDE, an overlay whose writes stay in the
# guest over XENLVM_OVERLAY, and back in place XENLVM_KEEP: those of the checkout, its virtual
# environment, the Python installation and this work directory that lie below them (a clone
# in /var/tmp, pyenv under /root). Take a handle on each while it is still in view.
mkdir -p /run/keep
keep_index=0
for path in $(echo "$XENLVM_KEEP" | tr ':' ' '); do
    keep_index=$((keep_index + 1))
    mkdir -p "/run/keep/$keep_index" && mount --bind "$path" "/run/keep/$keep_index" \
        || { echo "cannot take a handle on $path"; halt -f; }
done
for dir in $(echo "$XENLVM_HIDE" | tr ':' ' '); do
    mount -t tmpfs -o mode=0755 tmpfs "$dir" || { echo "tmpfs $dir failed"; halt -f; }
done
MODULES=/usr/lib/uml/modules/$(uname -r)/kernel
for module in fs/overlayfs/overlay.ko drivers/md/dm-mod.ko drivers/md/dm-bufio.ko \
        drivers/md/dm-snapshot.ko drivers/md/persistent-data/dm-persistent-data.ko \
        drivers/md/dm-bio-prison.ko drivers/md/dm-thin-pool.ko drivers/md/dm-flakey.ko \
        drivers/block/loop.ko fs/fuse/fuse.ko; do
    insmod "$MODULES/$module" || echo "insmod $module failed"
done
# /etc and /var/lib hold files the system needs: overlay them so writes land on tmpfs.
for dir in $(echo "$XENLVM_OVERLAY" | tr ':' ' '); do
    layers=/run/overlay$dir
    mkdir -p "$layers/upper" "$layers/work"
    mount -t overlay overlay -o "lowerdir=$dir,upperdir=$layers/upper,workdir=$layers/work" "$dir" \
        || { echo "overlay $dir failed"; halt -f; }
done
# Each kept path must be this machine's directory again (same device and inode as the handle):
# a work directory hidden here would leave the host waiting for answers that never come.
keep_index=0
for path in $(echo "$XENLVM_KEEP" | tr ':' ' '); do
    keep_index=$((keep_index + 1))
    mkdir -p "$path" && mount --bind "/run/keep/$keep_index" "$path" \
        && [ "$(stat -c %d:%i "$path")" = "$(stat -c %d:%i "/run/keep/$keep_index")" ] \
        || { echo "$path could not be kept in view after hiding: stopping"; halt -f; }
done
mkdir -p /etc/lvm
cat >/etc/lvm/lvm.conf <<'CONF'
# No udev in the guest: LVM creates /dev nodes itself.
activation { udev_sync = 0 udev_rules = 0 verify_udev_operations = 1 monitoring = 0 }
backup { backup = 0 archive = 0 }
global { use_lvmetad = 0 }
devices { obtain_device_list_from_udev = 0 }
CONF
rm -rf /etc/xenlvm
pvcreate -q /dev/ubda && vgcreate -q system /dev/ubda
set +x
echo ready > "$WORK/guest-ready"
"$XENLVM_PYTHON" "$XENLVM_GUEST_FILES/agent.py" "$WORK/mailbox"
echo "agent exited with $?"
sync
halt -f
