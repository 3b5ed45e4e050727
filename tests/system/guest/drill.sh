#!/bin/sh
# A VM disk for the restore drill (tests/system/test_restore.py), run after world.sh:
#   drill.sh dos|gpt LV DOMAIN PYTHON
# system/LV (340 MiB) gets a partition table of the given type with p1 ext4 "root" (without
# metadata_csum and huge_file), p2 swap "swap", p3 XFS "data" (300 MiB: the smallest XFS
# mkfs.xfs makes outside xfstests; without reflink, bigtime and inobtcount, which older guest
# kernels refuse), each filesystem filled by drill.py populate; the domain runs on the
# stand-in xl with it as xvda.
set -eu
LABEL=$1 LV=$2 DOMAIN=$3 PYTHON=$4
XL=/opt/xen/bin/xl
DRILL="$(dirname "$0")/drill.py"
DISK=/dev/system/$LV
export TEST_DIR=/run TEST_DEV=/dev/null QA_CHECK_FS=1

lvcreate -q -y -L 340M -n "$LV" system >/dev/null
if [ "$LABEL" = gpt ]; then
    printf 'label: gpt\nstart=2048, size=16M, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="root"\nsize=4M, type=0657FD6D-A4AB-43C4-84E5-0933C84B4F4F, name="swap"\nsize=300M, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="data", attrs="GUID:60"\n' \
        | sfdisk -q "$DISK" 2>/dev/null
else
    printf 'label: dos\nstart=2048, size=16M, type=83, bootable\nsize=4M, type=82\nsize=300M, type=83\n' \
        | sfdisk -q "$DISK" 2>/dev/null
fi
for part in 1 2 3; do
    line=$(partx --raw --bytes --noheadings --output NR,START,SIZE "$DISK" | awk -v n="$part" '$1 == n')
    set -- $line
    loop=$(losetup --find --show --offset $(($2 * 512)) --sizelimit "$3" "$DISK")
    case $part in
        # without two of today's default features, as an older guest's mkfs made it
        1) mkfs.ext4 -q -L root -O ^metadata_csum,^huge_file -E lazy_itable_init=0,lazy_journal_init=0 "$loop" ;;
        2) mkswap -q -L swap "$loop" >/dev/null ;;
        3) mkfs.xfs -q -f -L data -m reflink=0,bigtime=0,inobtcount=0 "$loop" ;;
    esac
    if [ "$part" != 2 ]; then
        mkdir -p /run/drillfs && mount "$loop" /run/drillfs
        "$PYTHON" "$DRILL" populate /run/drillfs "$DOMAIN p$part"
        umount /run/drillfs
    fi
    losetup --detach "$loop"
done
"$XL" fake-create "$DOMAIN" --disk "$DISK,xvda" >/dev/null
sync
