"""Xen: the domains of a job, their pause windows, and the export of their configuration."""
