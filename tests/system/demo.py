"""`make demo`: the whole nightly job on real LVM in the sandbox, explained step by step.

Boots a real Linux kernel (User-Mode Linux), builds the vendor manual's world, installs the
hooks where sesam keeps them, runs sbc_pre, backs up /mnt/vmbackup with tar while a "VM"
keeps writing to the origin volume, runs sbc_post, and proves the archive holds exactly the
data as of the snapshot. Nothing on this machine is changed outside .work/.
"""

from __future__ import annotations

import re
import sys
import textwrap
import time

from sandbox.machine import Guest, SandboxError
from sandbox.world import SESAM_ARGS, World

CONFIG = """\
settings:
  path: /opt/xen/bin:/usr/sbin:/usr/bin:/sbin:/bin   # the stand-in xl lives in /opt/xen/bin
jobs:
  xenvm:
    volume: system/xenvm
    snapshot: vmbackup
    size: 128M
    mountpoint: /mnt/vmbackup
    tasks: [xen_vm1]
    xen:
      domains: auto
      mode: pause
"""
MANIFEST = "cd {root} && find . -type f | sort | xargs sha256sum"


def say(step: str, text: str) -> None:
    print(f"\n== {step}\n" + textwrap.fill(text, 96), flush=True)


def show(done) -> None:
    for line in (done.stdout + done.stderr).rstrip().splitlines():
        print(f"   | {line}")


def main() -> int:
    started = time.monotonic()
    say("1. Boot", "Starting a real Linux 6.1 kernel as a process (User-Mode Linux). Inside it LVM, "
        "device-mapper snapshots and ext4 work exactly as on a Xen dom0.")
    guest = Guest("demo")
    try:
        guest.boot()
    except SandboxError as exc:
        print(f"\nmake demo: {exc}", file=sys.stderr)
        return 1
    try:
        world = World(guest)
        say("2. The manual's world", "Volume group 'system', logical volume 'xenvm' (ext4) mounted at "
            "/srv/xenvm with one VM folder, vm1/, holding a 4 MiB disk image and its config. The hooks "
            "sbc_pre and sbc_post are installed in /opt/sesam/bin/sesam; /etc/xenlvm/config.yaml is:")
        world.build(config=CONFIG)
        print(textwrap.indent(CONFIG, "   | "))
        show(guest.run(["lvs", "system"]))
        guest.run(["/opt/xen/bin/xl", "fake-create", "vm1", "--disk", "/srv/xenvm/vm1/disk.img,xvda"],
                  check=True)
        print("   | Xen cannot run here, so a stand-in 'xl' plays the hypervisor, with domain vm1 running:")
        show(guest.run(["/opt/xen/bin/xl", "list"]))

        guest.sh(f"{MANIFEST.format(root='/srv/xenvm')} > /run/manifest-at-snapshot")
        say("3. sbc_pre", "sesam runs the pre hook with the task's details and an empty environment. "
            "It finds the domains whose disks are on the volume (auto), saves their configuration, "
            "pauses them only while lvcreate makes the snapshot 'vmbackup' (tagged as xenlvm's), "
            "resumes them, and mounts the snapshot read-only at /mnt/vmbackup:")
        pre = world.pre()
        show(pre)
        window = re.search(r"pause window: (\d+) ms", world.log())
        print(f"   | => vm1 was paused for {window.group(1) if window else '?'} ms "
              "(first pause to last unpause, measured by xenlvm and logged on every run)")
        if pre.rc != 0:
            print(f"sbc_pre failed with exit status {pre.rc}")
            return 1
        show(guest.run(["lvs", "-o", "lv_name,lv_attr,lv_size,origin,lv_tags", "system"]))

        say("4. The backup, while the VM keeps writing", "A writer keeps changing vm1's disk image on the "
            "origin volume while tar (standing in for sesam) archives /mnt/vmbackup.")
        writer = guest.spawn(["/bin/sh", "-c", "while :; do head -c 262144 /dev/urandom | dd "
                              "of=/srv/xenvm/vm1/disk.img bs=64k conv=notrunc "
                              "2>/dev/null; date > /srv/xenvm/vm1/last-write; sync; done"])
        time.sleep(1)
        backup = guest.run(["tar", "-C", "/mnt/vmbackup", "-cf", "/run/backup.tar", "."], check=True)
        guest.signal(writer, 9)
        guest.wait(writer)
        print(f"   | tar archived /mnt/vmbackup in {backup.duration:.2f} s")

        say("5. sbc_post", "sesam runs the post hook (always, even after a failed backup). It unmounts "
            "and removes the snapshot, and would fail if the snapshot had overflowed:")
        post = world.post()
        show(post)

        say("6. Verify", "Unpacking the archive and comparing every file with the checksums taken at "
            "snapshot time; the origin, by contrast, has changed since:")
        guest.sh("mkdir -p /run/restore && tar -C /run/restore -xf /run/backup.tar && "
                 f"{MANIFEST.format(root='/run/restore')} > /run/manifest-of-backup")
        same = guest.run(["cmp", "/run/manifest-at-snapshot", "/run/manifest-of-backup"]).rc == 0
        changed = guest.sh(f"{MANIFEST.format(root='/srv/xenvm')} | cmp -s - /run/manifest-at-snapshot",
                           check=False).rc != 0
        left = guest.run(["lvs", "--noheadings", "-o", "lv_name", "system"]).stdout.split()
        print(f"   | archive equals the data as of the snapshot: {'yes' if same else 'NO'}")
        print(f"   | origin changed during the backup:           {'yes' if changed else 'no'}")
        print(f"   | logical volumes left: {', '.join(left)}; /mnt/vmbackup mounted: "
              f"{'yes' if '/mnt/vmbackup' in world.mounts() else 'no'}")
        ok = pre.rc == 0 and post.rc == 0 and same and changed and left == ["xenvm"]
        say("Result", ("SUCCESS: the backup holds exactly the data as of the snapshot, and nothing "
                       "was left behind." if ok else "FAILURE: see above.")
            + f" ({time.monotonic() - started:.0f} s in all; sesam arguments used: {' '.join(SESAM_ARGS)})")
        return 0 if ok else 1
    finally:
        guest.halt()


if __name__ == "__main__":
    sys.exit(main())
