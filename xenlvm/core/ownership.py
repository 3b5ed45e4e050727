"""The proof xenlvm asks before it removes a snapshot: the LV carries xenlvm's tags for this
job and this volume (LogicalVolume.owned_by), and removing it takes nothing else along. An
LV that fails it is left untouched, with a message that says what to do."""

from __future__ import annotations

from xenlvm.config.model import Job, SnapshotSpec
from xenlvm.errors import SafetyRefusal

TYPE_CHECKING = False  # xenlvm/__init__.py says why
if TYPE_CHECKING:
    from xenlvm.host.lvm import LogicalVolume


def prove_ownership(job: Job, spec: SnapshotSpec, snapshot: LogicalVolume) -> None:
    """Raise SafetyRefusal unless snapshot is the job's, made by xenlvm for spec, and lvremove
    of it would remove nothing else."""
    if not snapshot.owned_by(job, spec):
        raise SafetyRefusal(
            f"{snapshot} does not carry xenlvm's tags for job {job.name!r} (tags: "
            f"{','.join(sorted(snapshot.tags)) or 'none'}); xenlvm did not create it and will "
            "not remove it. Rename or remove it yourself, or choose another 'snapshot:' name.")
    if snapshot.attr[:1] in ("o", "O"):  # an origin: lvremove would take its snapshots along
        raise SafetyRefusal(
            f"{snapshot} is xenlvm's, but somebody made a snapshot of it (lv_attr {snapshot.attr}), "
            "which lvremove would remove with it: xenlvm did not create that one and will not "
            "remove it. Remove or keep it yourself ('lvs -o lv_name,origin'), then run 'xenlvm "
            "post' again.")


def lost_tags(snapshot: LogicalVolume) -> SafetyRefusal:
    """lvremove's --select guard matched nothing: the LV lost its tags after it was proven."""
    return SafetyRefusal(f"{snapshot} lost xenlvm's tags just before removal; it was left untouched. "
                         "Check who changed it ('lvs -o+lv_tags').")
