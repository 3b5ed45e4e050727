"""Ownership: the tags xenlvm puts on the snapshots it creates, the proof it asks before it
touches one, and the guarded removal. Every rule of "is this LV xenlvm's?" lives here.

- Tags (tags_for): ``xenlvm`` (the owner), ``xenlvm_job_<job>`` (the job), ``xenlvm_run_<time>_<pid>``
  (the run that created it) and, on a VM disk's snapshot, ``xenlvm_vmdisk``.
- The job's snapshot of a volume (owns): the owner and job tags, on the volume's VG, of the
  volume, under the snapshot name the spec gives. A VM disk's snapshot also carries the VM-disk
  tag and xenlvm's own name for it, ``<origin>.xenlvm`` (vm_disk_snapshots); one renamed out of
  that naming is being kept by an admin and is not xenlvm's any more.
- Before removal (prove): the job's snapshot, and no snapshot of it exists (lvremove would take
  that along). The removal itself (remove, remove_one) names the job's tag to lvremove
  --select, so LVM checks it again at that very moment.
- The monitors, which watch for hours (SameSnapshots): only the snapshot they first saw, not
  one re-created under its name.
- A chain's base (is_base; xenlvm.increments.bases says which base a disk needs): a VM disk's
  snapshot that post kept, with ``xenlvm_base``, ``xenlvm_depth_<n>`` and, at depth 0,
  ``xenlvm_sha256_<hex>`` added (base_tags), renamed ``<origin>.xenlvm-base.<run>`` (base_name).
  Its removal (remove_bases) is guarded as a snapshot's, with the base tag in the --select too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence

from xenlvm.config.model import Job, SnapshotSpec, Volume
from xenlvm.errors import CommandFailed, SafetyRefusal, XenlvmError
from xenlvm.host.lvm import LogicalVolume, Lvm, VolumeGroup
from xenlvm.host.retry import Backoff

log = logging.getLogger("xenlvm")

OWNER_TAG = "xenlvm"
VMDISK_TAG = "xenlvm_vmdisk"  # beside the owner and job tags: the snapshot of a VM disk
BASE_TAG = "xenlvm_base"  # a VM disk's snapshot kept as its chain's base (xenlvm.increments.bases)
RUN_TAG_PREFIX = "xenlvm_run_"
DEPTH_TAG_PREFIX = "xenlvm_depth_"  # on a base: how many increments its run's file was past the full image
SHA256_TAG_PREFIX = "xenlvm_sha256_"  # on a depth-0 base: the SHA-256 of its run's full image
BASE_NAME_INFIX = ".xenlvm-base."  # the base of VG/LV kept from run R is VG/LV.xenlvm-base.R
VMDISK_SNAPSHOT_SUFFIX = ".xenlvm"  # the snapshot of the VM disk VG/LV is VG/LV.xenlvm


def job_tag(job_name: str) -> str:
    return f"xenlvm_job_{job_name}"


def run_tag(started: float, pid: int) -> str:
    """The tag of the run of pid that started at started (time.time())."""
    return f"{RUN_TAG_PREFIX}{time.strftime('%Y%m%dT%H%M%S', time.localtime(started))}_{pid}"


def tags_for(job: Job, run: str, *, vm_disk: bool = False) -> list[str]:
    """The tags of a snapshot that the run (run_tag) creates for the job."""
    return [OWNER_TAG, job_tag(job.name), run, *([VMDISK_TAG] if vm_disk else [])]


def run_of(lv: LogicalVolume) -> str | None:
    """The tag of the run that created lv, if it carries one (run_id_of: the run's id)."""
    return next((t for t in sorted(lv.tags) if t.startswith(RUN_TAG_PREFIX)), None)


def carries_job_tags(job_name: str, lv: LogicalVolume) -> bool:
    """lv carries xenlvm's owner and job tags for the job (whatever it is a snapshot of)."""
    return {OWNER_TAG, job_tag(job_name)} <= lv.tags


def owns(job: Job, spec: SnapshotSpec, lv: LogicalVolume) -> bool:
    """True when xenlvm created lv for the job, as the snapshot of spec's volume."""
    return (carries_job_tags(job.name, lv) and lv.vg == spec.origin.vg and lv.origin == spec.origin.lv
            and lv.name == spec.snapshot)


def created_by(job: Job, spec: SnapshotSpec, lv: LogicalVolume, run: str) -> bool:
    """owns, and the run (run_tag) created it: not an earlier run's."""
    return owns(job, spec, lv) and run in lv.tags


def prove(job: Job, spec: SnapshotSpec, lv: LogicalVolume) -> None:
    """Raise SafetyRefusal unless lv is the job's, made by xenlvm for spec, and lvremove of it
    would remove nothing else."""
    if not owns(job, spec, lv):
        raise SafetyRefusal(
            f"{lv} does not carry xenlvm's tags for job {job.name!r} (tags: "
            f"{','.join(sorted(lv.tags)) or 'none'}); xenlvm did not create it and will "
            "not remove it. Rename or remove it yourself, or choose another 'snapshot:' name.")
    if lv.is_origin:  # lvremove would take its snapshots along
        raise SafetyRefusal(
            f"{lv} is xenlvm's, but somebody made a snapshot of it (lv_attr {lv.attr}), "
            "which lvremove would remove with it: xenlvm did not create that one and will not "
            "remove it. Remove or keep it yourself ('lvs -o lv_name,origin'), then run 'xenlvm "
            "post' again.")


def lost_tags(lv: LogicalVolume) -> SafetyRefusal:
    """lvremove's --select guard matched nothing: the LV lost its tags after it was proven."""
    return SafetyRefusal(f"{lv} lost xenlvm's tags just before removal; it was left untouched. "
                         "Check who changed it ('lvs -o+lv_tags').")


# ---------------------------------------------------------------------------------------------
# VM disks' snapshots: found by their tags and xenlvm's name for them, not by the configuration


def vm_disk_snapshot_name(origin: str) -> str:
    """xenlvm's name for the snapshot of the VM disk origin (an LV name)."""
    return f"{origin}{VMDISK_SNAPSHOT_SUFFIX}"


def vm_disk_snapshots(job: Job, vgs: Mapping[str, VolumeGroup]) -> list[LogicalVolume]:
    """The job's VM disk snapshots: they carry all three of xenlvm's tags for them and xenlvm's
    name for the snapshot of their origin (<origin>.xenlvm). One renamed out of that naming
    (an admin keeping it: vm2-disk.keep-for-forensics) is not xenlvm's any more: told, kept."""
    found = []
    for lv in (lv for vg in vgs.values() for lv in vg.lvs.values()
               if lv.origin and VMDISK_TAG in lv.tags and carries_job_tags(job.name, lv)):
        if lv.name == vm_disk_snapshot_name(lv.origin):
            found.append(lv)
        else:
            # debug only: status --json prints on stdout, and every look at the host comes here
            log.debug("%s carries xenlvm's tags for job %s but not xenlvm's name for a snapshot of %s "
                      "(%s): renamed to be kept, so xenlvm leaves it alone", lv, job.name, lv.origin,
                      vm_disk_snapshot_name(lv.origin))
    return found


def vm_disk_spec(job: Job, snapshot: LogicalVolume) -> SnapshotSpec:
    """The spec xenlvm creates a snapshot of snapshot's origin for: its name is xenlvm's own
    (vm_disk_snapshot_name), never taken from the LV, so the proof of ownership checks it."""
    return SnapshotSpec(Volume(snapshot.vg, snapshot.origin), vm_disk_snapshot_name(snapshot.origin),
                        job.mountpoint)


# ---------------------------------------------------------------------------------------------
# the monitors: the same snapshot as at the first look


class SameSnapshots:
    """What a monitor (the watchdog, the pool guard) saw of each snapshot of the job at its
    first look: a snapshot is still ours only with the job's tags and the same creation time
    and run as then, so one removed and re-created under its name is never acted on."""

    def __init__(self, job_name: str) -> None:
        self.job_name = job_name
        self._first: dict[str, tuple[str, str | None]] = {}

    def still_ours(self, lv: LogicalVolume) -> bool:
        if not carries_job_tags(self.job_name, lv):
            return False
        identity = (lv.created, run_of(lv))
        return self._first.setdefault(str(lv), identity) == identity


# ---------------------------------------------------------------------------------------------
# the guarded removal


def remove(lvm: Lvm, job: Job, snapshots: Sequence[tuple[SnapshotSpec, LogicalVolume]], *,
           retry_for: float = 15.0) -> dict[str, XenlvmError]:
    """Remove the job's snapshots with ONE lvremove, each after proving it is xenlvm's; return
    the failures by snapshot ("vg/lv"). If that lvremove fails, each snapshot lvs still shows
    is then removed on its own (remove_one), so each failure is told on its own LV."""
    failures: dict[str, XenlvmError] = {}
    mine = []
    for spec, snapshot in snapshots:
        try:
            prove(job, spec, snapshot)
            mine.append((spec, snapshot))
        except SafetyRefusal as exc:
            failures[str(snapshot)] = exc
    if len(mine) > 1:
        try:
            result = lvm.remove_tagged([lv for _, lv in mine], job_tag(job.name))
        except CommandFailed:
            listed = {str(lv) for lv in lvm.still_listed([lv for _, lv in mine])}
            mine = [(spec, lv) for spec, lv in mine if str(lv) in listed]
        else:
            if result is not None:
                for _, lv in mine:
                    try:
                        if lvm.still_exists(lv):
                            failures[str(lv)] = lost_tags(lv)
                    except XenlvmError as exc:  # lvs could not tell: said on that LV, post goes on
                        failures[str(lv)] = exc
            return failures
    for spec, snapshot in mine:
        try:
            remove_one(lvm, job, spec, snapshot, retry_for=retry_for)
        except XenlvmError as exc:
            failures[str(snapshot)] = exc
    return failures


def remove_one(lvm: Lvm, job: Job, spec: SnapshotSpec, snapshot: LogicalVolume, *,
               retry_for: float = 15.0) -> None:
    """Remove the job's snapshot after proving it is xenlvm's; retry while it is in use.

    The --select guard makes LVM itself check the tags at the moment of removal, so an LV
    that was replaced behind our back between the check and the removal is not touched.
    """
    prove(job, spec, snapshot)
    backoff = Backoff(retry_for, first=0.5, most=4.0, clock=time)
    while True:
        try:
            result = lvm.remove_tagged([snapshot], job_tag(job.name))
        except CommandFailed as exc:
            if backoff.expired() or not lvm.in_use(snapshot, exc):
                raise
            log.warning("%s is still in use, retrying lvremove in %.1f s", snapshot, backoff.delay)
            backoff.wait()
            continue
        # lvremove exits 0 also when its --select guard matched nothing: look whether it is gone.
        if result is not None and lvm.still_exists(snapshot):
            raise lost_tags(snapshot)
        return


# ---------------------------------------------------------------------------------------------
# the chains' bases: a VM disk's snapshot kept until the next run


def base_name(origin: str, run: str) -> str:
    """The name of the base that run's snapshot of the LV origin becomes."""
    return f"{origin}{BASE_NAME_INFIX}{run}"


def _single(lv: LogicalVolume, prefix: str) -> str | None:
    """What follows prefix in lv's one tag that starts with it, or None (none, or several)."""
    found = [t[len(prefix):] for t in lv.tags if t.startswith(prefix)]
    return found[0] if len(found) == 1 else None


def run_id_of(lv: LogicalVolume) -> str | None:
    """The run id (YYYYmmddTHHMMSS_<pid>) of lv's single run tag, or None (none, or several);
    run_of gives the tag itself."""
    return _single(lv, RUN_TAG_PREFIX)


def depth_of(lv: LogicalVolume) -> int | None:
    """How many increments past its full image the base's run was (its single depth tag)."""
    depth = _single(lv, DEPTH_TAG_PREFIX)
    return int(depth) if depth is not None and depth.isdigit() else None


def full_sha256_of(lv: LogicalVolume) -> bytes | None:
    """The SHA-256 of the full image a depth-0 base's run wrote, when its tag records one."""
    try:
        digest = bytes.fromhex(_single(lv, SHA256_TAG_PREFIX) or "")
    except ValueError:
        return None
    return digest if len(digest) == 32 else None


def base_tags(depth: int, full_sha256: bytes | None) -> list[str]:
    """The tags a snapshot gets as it becomes a base (beside its owner, job and run tags)."""
    tags = [BASE_TAG, f"{DEPTH_TAG_PREFIX}{depth}"]
    return tags + ([f"{SHA256_TAG_PREFIX}{full_sha256.hex()}"] if depth == 0 and full_sha256 else [])


def carries_base_tags(job_name: str, lv: LogicalVolume) -> bool:
    """lv carries the base and job tags (a hint only: is_base proves a base)."""
    return {BASE_TAG, job_tag(job_name)} <= lv.tags


def is_base(lv: LogicalVolume, job: Job) -> bool:
    """Whether lv is a base xenlvm kept for the job: its tags, a snapshot's origin, and the name
    of its run's base."""
    run = run_id_of(lv)
    return (carries_job_tags(job.name, lv) and BASE_TAG in lv.tags and bool(lv.origin) and run is not None
            and lv.name == base_name(lv.origin, run))


def remove_bases(lvm: Lvm, job: Job, bases: Sequence[LogicalVolume]) -> None:
    """Remove the job's bases with one lvremove, each proven the job's first, and again by LVM
    itself at the moment of removal (--select on the base and job tags); refuse, naming it, a
    base still there after (it lost its tags)."""
    for lv in bases:
        if not is_base(lv, job):
            raise SafetyRefusal(f"{lv} is not a base xenlvm kept for job {job.name!r} (tags: "
                                f"{','.join(sorted(lv.tags)) or 'none'}); it was left untouched")
    if bases and lvm.remove_tagged(bases, BASE_TAG, job_tag(job.name)) is not None:
        for lv in bases:
            if lvm.still_exists(lv):
                raise lost_tags(lv)
