#!/bin/sh
# Give the test guest a private /usr and /var before a Debian package is installed into it.
# init.sh hides /etc, /opt, /tmp and others, but /usr and most of /var are still this
# machine's real directories (the guest's root is this machine's filesystem): overlay both
# with tmpfs so that dpkg, its maintainer scripts and triggers write only into the guest's
# memory. Then prove it: refuse to go on unless both are overlays now.
set -eu
for dir in usr var; do
    mkdir -p "/run/private-root/$dir/upper" "/run/private-root/$dir/work"
    mount -t overlay overlay \
        -o "lowerdir=/$dir,upperdir=/run/private-root/$dir/upper,workdir=/run/private-root/$dir/work" "/$dir"
done
for dir in /usr /var; do
    fstype=$(awk -v dir="$dir" '$2 == dir {fstype = $3} END {print fstype}' /proc/mounts)
    if [ "$fstype" != overlay ]; then
        echo "$dir is not a private overlay (it is ${fstype:-not a mount point}): stopping" >&2
        exit 1
    fi
done
