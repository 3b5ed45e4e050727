"""xenlvm: consistent LVM snapshots of a Xen host's VM volume for SEP sesam backups."""

__version__ = "0.1.0"
