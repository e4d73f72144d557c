"""APScheduler 3.x, the peer of the `compare` scenario.

One process, no coordination and no run log: JOBS cron jobs at second 0 of
every minute, each spawning `sh -c true` (what a distcron job with command
`true` runs) from a thread pool of THREADS, until UNTIL (Unix seconds).
Each start's job index and wall time (ms, taken right before the spawn, as
distcron's start time is) go to OUT, one `<job> <ms>` line each; the last
line of standard output is a JSON object with the process's CPU seconds
and peak RSS (MiB).

usage: apscheduler_cron.py JOBS THREADS UNTIL OUT
"""

import json
import resource
import subprocess
import sys
import threading
import time

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger


def main():
    jobs, threads, until, out = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    starts = []  # list.append is atomic under the GIL

    def run(i):
        starts.append((i, int(time.time() * 1000)))
        subprocess.run(["sh", "-c", "true"], stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)

    scheduler = BlockingScheduler(
        executors={"default": ThreadPoolExecutor(threads)},
        # Run every tick however late (as distcron's misfire window does),
        # one at a time per job.
        job_defaults={"coalesce": False, "misfire_grace_time": 3600, "max_instances": 1},
    )
    trigger = CronTrigger(second=0)
    for i in range(jobs):
        scheduler.add_job(run, trigger, args=[i], id=f"j{i}")
    stopper = threading.Timer(max(0.0, until - time.time()), scheduler.shutdown)
    stopper.start()
    print(f"apscheduler: {jobs} jobs, {threads} threads, until {until}", flush=True)
    scheduler.start()
    with open(out, "w") as f:
        for i, ms in starts:
            f.write(f"{i} {ms}\n")
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"cpuSecs": usage.ru_utime + usage.ru_stime,
                      "peakRssMib": usage.ru_maxrss / 1024.0}), flush=True)


if __name__ == "__main__":
    main()
