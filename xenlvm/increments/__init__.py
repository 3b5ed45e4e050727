"""Incremental VM-disk backups: the increment file, the chain of a disk's files, and thin_delta."""
