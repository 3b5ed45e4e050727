#!/bin/sh
# The vendor manual's pre hook, unchanged: the baseline `make bench` compares sbc_pre with.
lvcreate -L64M -s -n vmbackup /dev/system/xenvm && mount -o ro /dev/system/vmbackup /mnt/vmbackup
