"""Runs inside the test guest: executes the host's requests from a mailbox directory.

The host writes req-N.json (atomically, by rename); the agent answers with resp-N.json.
Requests: run (argv, env, input, timeout) -> rc/stdout/stderr/duration; spawn (argv, env)
-> a handle; wait (handle, timeout); signal (handle, signal number); halt.
"""

import json
import os
import signal
import subprocess
import sys
import time

MAILBOX = sys.argv[1]
spawned = {}


def answer(number, payload):
    tmp = os.path.join(MAILBOX, f".resp-{number}.tmp")
    with open(tmp, "w") as handle:
        json.dump(payload, handle)
    os.rename(tmp, os.path.join(MAILBOX, f"resp-{number}.json"))


def output_of(data):
    return data.decode(errors="replace") if isinstance(data, bytes) else (data or "")


def handle(request):
    op = request["op"]
    if op == "run":
        start = time.monotonic()
        try:
            # No input means an empty stdin: a tool that asks a question must not wait forever.
            stdin = {"input": request["input"]} if request.get("input") is not None else \
                {"stdin": subprocess.DEVNULL}
            proc = subprocess.run(request["argv"], env=request.get("env"), **stdin,
                                  capture_output=True, text=True, errors="replace",
                                  timeout=request.get("timeout", 300), cwd=request.get("cwd") or "/")
        except subprocess.TimeoutExpired as exc:
            return {"rc": None, "timeout": True, "stdout": output_of(exc.stdout),
                    "stderr": output_of(exc.stderr), "duration": time.monotonic() - start}
        except OSError as exc:
            return {"rc": 127, "stdout": "", "stderr": str(exc), "duration": 0.0}
        return {"rc": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr,
                "duration": time.monotonic() - start}
    if op == "spawn":
        # The child inherits the file; it must outlive this request, so no context manager.
        out = open(request["log"], "w") if request.get("log") else subprocess.DEVNULL  # noqa: SIM115
        proc = subprocess.Popen(request["argv"], env=request.get("env"), stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, cwd=request.get("cwd") or "/")
        spawned[proc.pid] = proc
        return {"pid": proc.pid}
    if op == "wait":
        proc = spawned[request["pid"]]
        try:
            rc = proc.wait(timeout=request.get("timeout", 300))
        except subprocess.TimeoutExpired:
            return {"rc": None, "timeout": True}
        spawned.pop(request["pid"])
        return {"rc": rc}
    if op == "signal":
        try:
            if request.get("group"):
                os.killpg(request["pid"], request["sig"])
            else:
                os.kill(request["pid"], request["sig"])
        except ProcessLookupError:
            return {"ok": False}
        return {"ok": True}
    if op == "reap":
        for proc in list(spawned.values()):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        spawned.clear()
        return {"ok": True}
    raise ValueError(f"unknown op {op!r}")


def main():
    number = 0
    while True:
        path = os.path.join(MAILBOX, f"req-{number}.json")
        if not os.path.exists(path):
            time.sleep(0.01)
            continue
        with open(path) as handle_:
            request = json.load(handle_)
        os.unlink(path)
        if request["op"] == "halt":
            answer(number, {"ok": True})
            return
        try:
            payload = handle(request)
        except Exception as exc:  # report to the host rather than dying
            payload = {"error": f"{type(exc).__name__}: {exc}"}
        answer(number, payload)
        number += 1


main()
