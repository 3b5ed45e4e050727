#!/bin/sh
# VM disks on logical volumes of their own, beside the manual's world (run after world.sh):
#   system/vm2-disk  MBR: p1 ext4, p2 swap, p3 XFS       -> domain vm2, xvda
#   system/vm3-disk  GPT: p1 ext4, p2 guest LVM (a PV)   -> domain vm3, xvda
#   system/vm3-data  ext4 on the whole disk, no table    -> domain vm3, xvdb
# Each filesystem holds /marker with "<domain> <disk> <partition>". The domains run on the
# stand-in xl with these as phy: disks.
set -eu
XL=/opt/xen/bin/xl
# mkfs.xfs refuses filesystems below 300 MiB unless it believes it runs under xfstests
export TEST_DIR=/run TEST_DEV=/dev/null QA_CHECK_FS=1

lvcreate -q -y -L 64M -n vm2-disk system >/dev/null
lvcreate -q -y -L 40M -n vm3-disk system >/dev/null
lvcreate -q -y -L 16M -n vm3-data system >/dev/null
printf 'label: dos\nstart=2048, size=16M, type=83\nsize=4M, type=82\ntype=83\n' \
    | sfdisk -q /dev/system/vm2-disk 2>/dev/null
printf 'label: gpt\nsize=16M, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\ntype=E6D6D379-F507-44C2-A23C-238F2A3DF928\n' \
    | sfdisk -q /dev/system/vm3-disk 2>/dev/null

# format DEVICE PARTITION FSTYPE MARKER: make a filesystem inside the partition and mark it
format() {
    line=$(partx --raw --bytes --noheadings --output NR,START,SIZE "$1" | awk -v n="$2" '$1 == n')
    set -- "$1" "$2" "$3" "$4" $line
    loop=$(losetup --find --show --offset $(($6 * 512)) --sizelimit "$7" "$1")
    case "$3" in
        ext4) mkfs.ext4 -q -E lazy_itable_init=0,lazy_journal_init=0 "$loop" ;;
        xfs) mkfs.xfs -q -f "$loop" ;;
        swap) mkswap -q "$loop" >/dev/null ;;
        lvm) pvcreate -q "$loop" >/dev/null ;;
    esac
    if [ "$3" = ext4 ] || [ "$3" = xfs ]; then
        mkdir -p /run/vmfs && mount "$loop" /run/vmfs && echo "$4" > /run/vmfs/marker && umount /run/vmfs
    fi
    losetup --detach "$loop"
}
format /dev/system/vm2-disk 1 ext4 "vm2 xvda p1"
format /dev/system/vm2-disk 2 swap ""
format /dev/system/vm2-disk 3 xfs "vm2 xvda p3"
format /dev/system/vm3-disk 1 ext4 "vm3 xvda p1"
format /dev/system/vm3-disk 2 lvm ""
mkfs.ext4 -q -E lazy_itable_init=0,lazy_journal_init=0 /dev/system/vm3-data
mkdir -p /run/vmfs && mount /dev/system/vm3-data /run/vmfs && echo "vm3 xvdb" > /run/vmfs/marker && umount /run/vmfs

"$XL" fake-create vm2 --disk /dev/system/vm2-disk,xvda >/dev/null
"$XL" fake-create vm3 --disk /dev/system/vm3-disk,xvda --disk /dev/system/vm3-data,xvdb >/dev/null
sync
