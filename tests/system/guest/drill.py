"""Runs inside the test guest for the restore drill (tests/system/test_restore.py).

    drill.py populate DIR NAME   fill DIR with files of every kind a restore must keep: content,
                                 owners, modes, times, a hard link, a symbolic link, a sparse
                                 file, user xattrs, POSIX ACLs (access and default), a fifo and a
                                 device node
    drill.py manifest DIR        print everything about DIR's tree that a restore must keep, as
                                 JSON (ctime and inode numbers aside; hard links as groups)
"""

import hashlib
import json
import os
import stat
import struct
import sys

ACL_VERSION = 2
USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
UNDEFINED = 0xFFFFFFFF


def acl(*entries):
    """The kernel's binary form of a POSIX ACL (what setfacl writes as system.posix_acl_*)."""
    return struct.pack("<I", ACL_VERSION) + b"".join(struct.pack("<HHI", *e) for e in entries)


def populate(root, name):
    def path(*parts):
        return os.path.join(root, *parts)

    os.makedirs(path("etc", "conf.d"), exist_ok=True)
    os.makedirs(path("home", "alice"), exist_ok=True)
    with open(path("marker"), "w") as handle:
        handle.write(f"{name}\n")
    with open(path("etc", "hostname"), "w") as handle:
        handle.write(f"{name}-host\n")
    data = hashlib.sha256(name.encode()).digest() * 4096  # 128 KiB, not zeros
    with open(path("home", "alice", "data.bin"), "wb") as handle:
        handle.write(data)
    os.chown(path("home", "alice"), 1001, 1002)
    os.chown(path("home", "alice", "data.bin"), 1001, 1002)
    os.chmod(path("home", "alice"), 0o750)
    os.chmod(path("home", "alice", "data.bin"), 0o640)
    os.link(path("home", "alice", "data.bin"), path("etc", "data.hardlink"))
    os.symlink("../home/alice/data.bin", path("etc", "data.symlink"))
    os.lchown(path("etc", "data.symlink"), 1001, 1002)
    with open(path("sparse.img"), "wb") as handle:  # 8 MiB with two small islands of data
        handle.seek(1 << 20)
        handle.write(b"island one")
        handle.seek((6 << 20) + 12345)
        handle.write(b"island two")
        handle.truncate(8 << 20)
    with open(path("etc", "secret"), "w") as handle:
        handle.write("setuid and sticky bits\n")
    os.chmod(path("etc", "secret"), 0o4751)
    os.chmod(path("etc", "conf.d"), 0o1777)
    os.setxattr(path("etc", "hostname"), "user.origin", f"drill {name}".encode())
    os.setxattr(path("home", "alice", "data.bin"), "user.checksum", b"sha256")
    os.setxattr(path("home", "alice", "data.bin"), "trusted.owner", b"alice")
    os.setxattr(path("etc", "secret"), "system.posix_acl_access",
                acl((USER_OBJ, 7, UNDEFINED), (USER, 4, 1001), (GROUP_OBJ, 5, UNDEFINED),
                    (GROUP, 1, 1002), (MASK, 5, UNDEFINED), (OTHER, 1, UNDEFINED)))
    os.setxattr(path("home", "alice"), "system.posix_acl_default",
                acl((USER_OBJ, 7, UNDEFINED), (USER, 6, 1003), (GROUP_OBJ, 5, UNDEFINED),
                    (MASK, 7, UNDEFINED), (OTHER, 0, UNDEFINED)))
    os.mkfifo(path("etc", "fifo"), 0o620)
    os.mknod(path("etc", "null"), 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    # Times last, deepest first, so that nothing touches them again; each differs.
    stamp = 1_600_000_000
    for index, (directory, dirs, files) in enumerate(sorted(os.walk(root), reverse=True)):
        for offset, entry in enumerate(sorted(files + dirs)):
            target = os.path.join(directory, entry)
            when = (stamp + index * 1000 + offset) * 10**9 + 123456789
            os.utime(target, ns=(when, when), follow_symlinks=False)
    os.utime(root, ns=(stamp * 10**9, stamp * 10**9))


def describe(full):
    info = os.lstat(full)
    item = {"mode": oct(info.st_mode), "uid": info.st_uid, "gid": info.st_gid, "mtime_ns": info.st_mtime_ns}
    if stat.S_ISREG(info.st_mode):
        with open(full, "rb") as handle:
            item["sha256"] = hashlib.sha256(handle.read()).hexdigest()
        item["size"] = info.st_size
        item["sparse"] = info.st_blocks * 512 < info.st_size
    elif stat.S_ISLNK(info.st_mode):
        item["target"] = os.readlink(full)
    elif stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode):
        item["rdev"] = [os.major(info.st_rdev), os.minor(info.st_rdev)]
    if not stat.S_ISLNK(info.st_mode):
        item["xattrs"] = {k: os.getxattr(full, k).hex() for k in sorted(os.listxattr(full))}
    return item, info


def manifest(root):
    tree = {".": describe(root)[0]}
    inodes = {}
    for directory, dirs, files in os.walk(root):
        for entry in sorted(files + dirs):
            full = os.path.join(directory, entry)
            relative = os.path.relpath(full, root)
            tree[relative], info = describe(full)
            if stat.S_ISREG(info.st_mode):
                inodes.setdefault(info.st_ino, []).append(relative)
    links = sorted(sorted(paths) for paths in inodes.values() if len(paths) > 1)
    return {"tree": tree, "hard_links": links}


if __name__ == "__main__":
    if sys.argv[1] == "populate":
        populate(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "manifest":
        json.dump(manifest(sys.argv[2]), sys.stdout, indent=1, sort_keys=True)
    else:
        sys.exit(f"unknown command {sys.argv[1]}")
