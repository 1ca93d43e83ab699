"""A background worker: one "job" every few seconds. It runs on a terminal of its own
(`pty = true`), so a person can debug it: create the file `debug.flag` next to the Stackfile
and the next job stops at a breakpoint; `revostack connect worker` gives you the (Pdb) prompt."""
import os
import time

job = 0
while True:
    job += 1
    payload = {"job": job, "items": [job * 2, job * 3]}
    if os.path.exists("debug.flag"):
        os.unlink("debug.flag")
        print("worker: debug.flag found, stopping at a breakpoint (`revostack connect worker`)", flush=True)
        breakpoint()  # try: p payload, n, c
    print(f"worker: job {job} done ({sum(payload['items'])})", flush=True)
    time.sleep(float(os.environ.get("WORKER_INTERVAL", "5")))
