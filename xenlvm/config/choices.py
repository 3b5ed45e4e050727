"""Checks of a job's configuration that span its sections: what the job quiesces and what it
leaves out must agree with what it pauses and backs up (xen.quiesce, vmdisks.exclude)."""

from __future__ import annotations

from xenlvm.config.model import Job

TYPE_CHECKING = False  # typing costs the hooks' start-up an import: for annotations only
if TYPE_CHECKING:
    import yaml

    from xenlvm.config.load import Reader


def check_choices(reader: Reader, nodes: dict[str, yaml.Node], key: str, job: Job) -> None:
    """Raise the reader's ConfigError, at the section's line, for choices that contradict each other."""
    xen, vmdisks = job.xen, job.vmdisks
    if xen is not None and xen.quiesce is not None and xen.mode != "pause":
        raise reader.error(nodes["xen"], f"{key}.xen.quiesce", "freezes each domain around its pause "
                           "window: it needs 'mode: pause'")
    if vmdisks is None or not vmdisks.exclude:
        return
    whole = {item for item in vmdisks.exclude if "/" not in item}
    for section, named in (("xen", xen.domains if xen is not None else "auto"), ("vmdisks", vmdisks.domains)):
        both = sorted(whole & set(named)) if named != "auto" else []
        if both:
            raise reader.error(nodes[section], f"{key}.{section}.domains", f"names {both[0]!r}, which "
                               "vmdisks.exclude leaves out: remove it from one of the two")
    if xen is not None and xen.quiesce is not None:
        own = sorted(whole & {c.domain for c in xen.quiesce.per_domain})
        if own:
            raise reader.error(nodes["xen"], f"{key}.xen.quiesce.per_domain", f"has commands for {own[0]!r}, "
                               "which vmdisks.exclude leaves out")
