#!/bin/sh
# Give the test guest a private /usr and /var before a Debian package is installed into it.
# init.sh hides /etc, /opt, /tmp and others, but /usr and most of /var are still this
# machine's real directories (the guest's root is this machine's filesystem): overlay
# XENLVM_PRIVATE (/usr and /var) with tmpfs so that dpkg, its maintainer scripts and triggers
# write only into the guest's memory.
#
# The sandbox's work directory, whose mailbox carries the host's requests and the guest's
# answers, may lie below them (a checkout in /var/tmp or /usr/local/src): behind the overlay
# the answers would stay in the guest and the host would wait for them in vain. XENLVM_KEEP
# names what to bind back after the overlays (sandbox/guest_paths.py decides). This
# script refuses, before changing anything, to overlay a directory that holds the mailbox
# unless the work directory is kept; afterwards it proves that the work directory is this
# machine's (else it takes the overlays away again) and that both are overlays.
set -eu
say() { echo "private-root.sh: $*" >&2; }
work=$(tr '\0' '\n' </proc/1/environ | sed -n 's/^XENLVM_WORK=//p')
if [ -z "$work" ] || [ ! -d "$work/mailbox" ]; then
    say "the sandbox's mailbox is unknown (init has no XENLVM_WORK, or no mailbox in it): stopping"
    exit 1
fi
dirs=$(echo "$XENLVM_PRIVATE" | tr ':' ' ')
keep=$(echo "${XENLVM_KEEP:-}" | tr ':' ' ')
for dir in $dirs; do
    case "$work/" in "$dir"/*) ;; *) continue ;; esac
    kept=no
    for path in $keep; do
        case "$work/" in "$path"/*) kept=yes ;; esac
    done
    if [ "$kept" = no ]; then
        say "$dir holds the sandbox's mailbox ($work/mailbox), which is not among the paths to" \
            "bind back (XENLVM_KEEP='${XENLVM_KEEP:-}'): overlaying $dir would cut the guest off" \
            "from this machine: stopping, nothing changed"
        exit 1
    fi
done
before=$(stat -c %d:%i "$work")
index=0
for path in $keep; do
    index=$((index + 1))
    mkdir -p "/run/private-root/keep/$index"
    mount --bind "$path" "/run/private-root/keep/$index"
done
for dir in $dirs; do
    layers=/run/private-root$dir
    mkdir -p "$layers/upper" "$layers/work"
    mount -t overlay overlay -o "lowerdir=$dir,upperdir=$layers/upper,workdir=$layers/work" "$dir"
done
index=0
for path in $keep; do
    index=$((index + 1))
    mount --bind "/run/private-root/keep/$index" "$path"
done
if [ "$(stat -c %d:%i "$work")" != "$before" ]; then
    for dir in $dirs; do
        umount -l "$dir"
    done
    say "after the overlays $work was not this machine's directory any more: the overlays are" \
        "taken away again, stopping"
    exit 1
fi
for dir in $dirs; do
    fstype=$(awk -v dir="$dir" '$2 == dir {fstype = $3} END {print fstype}' /proc/mounts)
    if [ "$fstype" != overlay ]; then
        say "$dir is not a private overlay (it is ${fstype:-not a mount point}): stopping"
        exit 1
    fi
done
