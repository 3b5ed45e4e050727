"""The real-kernel sandbox: real LVM in a User-Mode Linux guest, driven from this machine.

Used by the system tests (tests/system), ``make demo`` and ``make bench``; it is no part of
xenlvm, the installed product. What is where:

- machine.py: one booted guest (Guest) and what a command in it returned (Completed);
- uml_host.py: what the sandbox needs from this host, its C helpers (uml/), and what to say
  when it cannot start; guest_paths.py: what the guest hides of this machine and keeps in view;
- world.py: the vendor manual's world inside the guest (World) and the hooks called as sesam
  calls them; chain.py and thin_pool.py: the worlds of thin-disk chains and of a small pool;
- guest/: what runs inside the guest (init.sh, the mailbox agent, world.sh, the stand-in xl,
  the fault wrappers, private-root.sh for the Debian package's test, thin_chain.py).
"""
