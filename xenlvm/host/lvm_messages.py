"""What lvremove says when the LV it is asked to remove is open, as each LVM release words it;
what xenlvm says of a VG that does not exist."""

from __future__ import annotations

import re
from collections.abc import Sequence

from xenlvm.errors import PreflightFailed

# What lvremove prints on stderr when the LV is open, as each LVM release words it (read from
# LVM's sources at each release tag: lib/metadata/lv_manip.c, then lib/activate/activate.c).
# Read only beside lvs' answer (lv_attr 'o'), for an opener that let go before lvs looked; a
# release that words it otherwise loses only that retry. Entries: releases, message ({vg} {lv}).
IN_USE_MESSAGES = (
    ("2.02.50-2.02.88", 'Can\'t remove open logical volume "{lv}"'),  # older than xenlvm needs
    ("2.02.95-2.03.x", "Logical volume {vg}/{lv} in use."),
    ("2.02.95-2.03.x", "Logical volume {vg}/{lv} contains a filesystem in use."),
    ("2.02.95-2.03.x", "Logical volume {vg}/{lv} is used by another device."),
)


def _message_pattern(template: str) -> re.Pattern[str]:
    parts = re.split(r"\{(?:vg|lv)\}", template)
    return re.compile(r"\S+".join(re.escape(part) for part in parts))


_IN_USE_PATTERNS = tuple(_message_pattern(template) for _, template in IN_USE_MESSAGES)


def says_in_use(stderr: str) -> bool:
    """Whether lvremove's stderr is one of IN_USE_MESSAGES."""
    return any(pattern.search(stderr) for pattern in _IN_USE_PATTERNS)


class VolumeGroupNotFound(PreflightFailed):
    """Named VGs that do not exist (vgs says so)."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        super().__init__("; ".join(map(vg_not_found_message, self.names)))


def vg_not_found_message(vg: str) -> str:
    return f"volume group {vg!r} not found: check 'volume:' in the configuration against the output of 'vgs'"
