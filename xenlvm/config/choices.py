"""Checks of a job's configuration that span its sections: what the job quiesces and what it
leaves out must agree with what it pauses and backs up (xen.quiesce, vmdisks.exclude), and its
image files must not land in what it backs up (vmdisks.image_dir)."""

from __future__ import annotations

from xenlvm.config.model import AUTO, Job
from xenlvm.host.fsutil import is_below


def contradicting_choices(job: Job) -> tuple[str, str, str] | None:
    """Given a job, return the first of its choices that contradict each other, as (the job's
    section to point at, the key below the job, the message), or None."""
    xen, vmdisks = job.xen, job.vmdisks
    image_dir = vmdisks.image_dir if vmdisks is not None else None
    if image_dir is not None and nested(image_dir, job.mountpoint):
        return ("vmdisks", "vmdisks.image_dir",
                f"{image_dir} must lie outside the job's mountpoint {job.mountpoint}")
    if xen is not None and xen.quiesce is not None and xen.mode != "pause":
        return "xen", "xen.quiesce", "freezes each domain around its pause window: it needs 'mode: pause'"
    if vmdisks is None or not vmdisks.exclude:
        return None
    whole = {item for item in vmdisks.exclude if "/" not in item}
    for section, named in (("xen", xen.domains if xen is not None else AUTO), ("vmdisks", vmdisks.domains)):
        both = sorted(whole & set(named)) if named is not AUTO else []
        if both:
            return (section, f"{section}.domains", f"names {both[0]!r}, which vmdisks.exclude leaves out: "
                    "remove it from one of the two")
    if xen is not None and xen.quiesce is not None:
        own = sorted(whole & {c.domain for c in xen.quiesce.per_domain})
        if own:
            return ("xen", "xen.quiesce.per_domain",
                    f"has commands for {own[0]!r}, which vmdisks.exclude leaves out")
    return None


def nested(a: str, b: str) -> bool:
    """True when a and b are the same directory or one lies below the other."""
    return is_below(a, b, or_same=True) or is_below(b, a)
