"""Cost of one stats sample per task with N tasks running (default 100).

  python bench/jails_stats.py [--n 100] [--rounds 5]

xc: rt.stats(name) reads the container's cgroup files directly (no process per sample);
rt.sample(name) is the same without the runtime's percent (what the driver's TaskStats reads).
Baseline in the same run: `runc events --stats <id>`, one process per sample, as a driver that
asks the runtime would do. Prints the mean per-sample cost of each and the ratio.
"""

from __future__ import annotations

import argparse
import subprocess
import time

from jails_common import bench_env, spec


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    with bench_env() as (rt, rootfs, work):
        names = [
            rt.start(spec(rootfs, work, f"st{i}", ("/bin/sleep", "600"))).name
            for i in range(args.n)
        ]
        for name in names:
            rt.stats(name)  # warm
        t0 = time.perf_counter()
        for _ in range(args.rounds):
            for name in names:
                u = rt.stats(name)
                assert u.pids >= 1
        xc = (time.perf_counter() - t0) / (args.rounds * len(names))
        t0 = time.perf_counter()
        for _ in range(args.rounds):
            for name in names:
                rt.sample(name)
        raw = (time.perf_counter() - t0) / (args.rounds * len(names))
        t0 = time.perf_counter()
        for name in names:  # one round: a process per sample is slow
            subprocess.run(
                ["runc", "--root", str(rt.runc_root), "events", "--stats", name],
                capture_output=True,
                check=True,
            )
        bare = (time.perf_counter() - t0) / len(names)
        for name in names:
            rt.stop(name, 9, 5)
    print(f"jails stats sample cost with {args.n} running tasks")
    print(f"  xc rt.stats (cgroup files)      {xc * 1e6:8.1f} us/sample")
    print(f"  xc rt.sample (TaskStats' path)  {raw * 1e6:8.1f} us/sample")
    print(f"  runc events --stats (process)   {bare * 1e6:8.1f} us/sample")
    print(f"  ratio xc/runc                   {xc / bare:8.3f}")
    print(f"  one sweep over all tasks        {xc * args.n * 1e3:8.2f} ms (xc)")


if __name__ == "__main__":
    main()
