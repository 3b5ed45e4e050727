"""The host: running commands, LVM, mounts, locks, retries, signals, files. Knows nothing of jobs."""
