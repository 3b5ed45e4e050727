"""The host: running commands, LVM, mounts, xl, processes, locks, retries, signals, files. Knows
nothing of jobs."""

# The search path for every command xenlvm runs, unless settings.path says otherwise: system
# directories only (the hooks start under sesam with whatever PATH it has).
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
