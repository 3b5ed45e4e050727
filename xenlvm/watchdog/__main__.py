"""python -m xenlvm.watchdog: the snapshot watchdog's process (a running one is recognised by this
name in its command line, also across an upgrade)."""

from xenlvm.watchdog.watch import main

raise SystemExit(main())
