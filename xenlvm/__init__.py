"""xenlvm: consistent LVM snapshots of a Xen host's VM volume for SEP sesam backups.

``TYPE_CHECKING = False`` at the top of a module, instead of ``from typing import
TYPE_CHECKING``: sesam runs the hooks for every backup of the host, most of them for other
tasks, and each one would pay for importing ``typing`` (tests/unit/test_hook_imports.py keeps
it out). mypy takes any name ``TYPE_CHECKING`` as true, so what is imported under
``if TYPE_CHECKING:`` serves the annotations (never evaluated: ``from __future__ import
annotations``) and is not imported at run time.
"""

__version__ = "0.1.0"
