"""`make bench`: how long xenlvm's hooks take on real LVM in the sandbox (see bench/run.py)."""
