"""Targets: what pre snapshots and shows to sesam, one kind per module (the volume; the VM disks
are in xenlvm.vmdisks)."""
