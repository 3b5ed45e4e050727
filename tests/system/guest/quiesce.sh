#!/bin/sh
# Stand-in guests for xen.quiesce (run after world.sh): for each domain named, a small ext4
# filesystem on a loop file in /run/guests (never on the snapshotted LV: LVM's suspend freezes a
# filesystem it finds mounted there, and fails on one that is already frozen), mounted at
# /run/guests/<domain>. And the admin's commands, root-owned in /opt/xen/bin:
#   guest-freeze DOMAIN   fsfreeze -f the guest's filesystem, as `ssh root@vm fsfreeze -f /` would
#   guest-thaw DOMAIN     fsfreeze -u it; a filesystem that is not frozen is no error
#   guest-frozen DOMAIN   (for the tests) prints yes or no, without blocking on a frozen filesystem
# Each call is logged to /run/guests/calls.log as "<ns> start|end freeze|thaw DOMAIN [status]"
# (the clock of the stand-in xl's calls.log). Faults, per call: the file
# /run/guests/inject-freeze-DOMAIN holding "fail" (exit 1, nothing frozen) or "hang" (freeze, then
# hang with a child process whose pid goes to /run/guests/hang.pid); inject-thaw-DOMAIN "fail".
# Usage: quiesce.sh DOMAIN...    quiesce.sh --remove   (thaw, unmount and forget every guest)
set -eu
G=/run/guests
remove() {
    for dir in $(awk -v g="$G/" 'index($2, g) == 1 {print $2}' /proc/mounts); do
        fsfreeze -u "$dir" 2>/dev/null || true
        umount "$dir"
    done
    rm -rf "$G"
}
remove
[ "${1:-}" = --remove ] && exit 0
mkdir -p "$G" /opt/xen/bin
for domain in "$@"; do
    truncate -s 8M "$G/$domain.img"
    mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$G/$domain.img"
    mkdir -p "$G/$domain"
    mount -o loop "$G/$domain.img" "$G/$domain"
done

cat > /opt/xen/bin/guest-freeze <<'SCRIPT'
#!/bin/sh
G=/run/guests
echo "$(date +%s%N) start freeze $1" >> $G/calls.log
rule=$(cat "$G/inject-freeze-$1" 2>/dev/null || true)
if [ "$rule" = fail ]; then
    echo "guest-freeze: $1: injected failure" >&2
    echo "$(date +%s%N) end freeze $1 1" >> $G/calls.log
    exit 1
fi
fsfreeze -f "$G/$1"
status=$?
if [ "$rule" = hang ]; then  # frozen, and the command never returns (a hung ssh)
    sleep 300 &
    echo $! > $G/hang.pid
    wait
fi
echo "$(date +%s%N) end freeze $1 $status" >> $G/calls.log
exit $status
SCRIPT
cat > /opt/xen/bin/guest-thaw <<'SCRIPT'
#!/bin/sh
G=/run/guests
echo "$(date +%s%N) start thaw $1" >> $G/calls.log
if [ "$(cat "$G/inject-thaw-$1" 2>/dev/null)" = fail ]; then
    echo "guest-thaw: $1: injected failure" >&2
    echo "$(date +%s%N) end thaw $1 1" >> $G/calls.log
    exit 1
fi
if out=$(fsfreeze -u "$G/$1" 2>&1); then
    status=0
else  # not frozen: EINVAL, which is what a thaw after a failed freeze finds
    case $out in *"Invalid argument"*) status=0 ;; *) echo "$out" >&2; status=1 ;; esac
fi
echo "$(date +%s%N) end thaw $1 $status" >> $G/calls.log
exit $status
SCRIPT
cat > /opt/xen/bin/guest-frozen <<'SCRIPT'
#!/bin/sh
# A second freeze of a frozen filesystem fails with EBUSY; of a thawed one it works (undone at once).
if fsfreeze -f "/run/guests/$1" 2>/dev/null; then fsfreeze -u "/run/guests/$1"; echo no; else echo yes; fi
SCRIPT
chmod 0755 /opt/xen/bin/guest-freeze /opt/xen/bin/guest-thaw /opt/xen/bin/guest-frozen
: > "$G/calls.log"
