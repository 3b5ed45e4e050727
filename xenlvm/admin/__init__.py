"""The admin's commands beyond the hooks: check, status, install-hooks, restore-disk and restore-image."""
