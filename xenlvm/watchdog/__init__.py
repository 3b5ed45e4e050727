"""The snapshot watchdog: its process (python -m xenlvm.watchdog), its supervision and its sizing decision."""
