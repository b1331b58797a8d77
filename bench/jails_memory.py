"""Resident memory per task outside the task itself, for N sleeping tasks (default 50).

  python bench/jails_memory.py [--n 50]

Outside the task there is exactly one process per task, the C supervisor (no runc shim stays
resident). Its RSS and PSS are read from /proc. Baseline in the same run: a bare Python interpreter
(`python -c 'import time; time.sleep(60)'`), what a Python supervisor per task would cost at least.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from jails_common import bench_env, spec


def _kib(pid: int, key: str, source: str) -> int:
    for line in Path(f"/proc/{pid}/{source}").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50)
    n = ap.parse_args().n
    with bench_env() as (rt, rootfs, work):
        handles = [rt.start(spec(rootfs, work, f"mem{i}", ("/bin/sleep", "600"))) for i in range(n)]
        time.sleep(0.5)
        rss = [_kib(h.supervisor_pid, "VmRSS", "status") for h in handles]
        pss = [_kib(h.supervisor_pid, "Pss", "smaps_rollup") for h in handles]
        py = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        time.sleep(0.5)
        py_rss = _kib(py.pid, "VmRSS", "status")
        py_pss = _kib(py.pid, "Pss", "smaps_rollup")
        py.kill()
        py.wait()
        for h in handles:
            rt.stop(h.name, 9, 5)
    print(f"jails per-task memory outside the task, {n} sleeping tasks")
    print(f"  supervisor RSS  median {statistics.median(rss):6.0f} KiB   max {max(rss)} KiB")
    print(f"  supervisor PSS  median {statistics.median(pss):6.0f} KiB   total {sum(pss)} KiB")
    print(f"  python baseline RSS {py_rss} KiB  PSS {py_pss} KiB")
    print(f"  ratio supervisor/python RSS {statistics.median(rss) / py_rss:.3f}")


if __name__ == "__main__":
    main()
