"""Start-to-running and stop latency of jails' Linux runtime vs bare runc, side by side.

  python bench/jails_lifecycle.py [--n 20]

/bin/true: rt.start + rt.wait + rt.destroy  vs  runc run (attached; deletes on exit).
sleeper:   rt.start (returns once running)  vs  runc run -d;
           rt.stop(SIGKILL) + rt.destroy   vs  runc kill KILL + wait stopped + runc delete.
Prints medians and the ratio xc/bare (absolute times vary by machine; the ratio is the result).
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import time

from jails_common import bare_bundle, bench_env, median_ms, runc_root, spec


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20)
    n = ap.parse_args().n
    with bench_env() as (rt, rootfs, work):
        rroot = str(runc_root())
        log = open(work / "bare.log", "ab")  # noqa: SIM115 - stdio for runc must be a file
        true_bundle = bare_bundle(rootfs, work, ["/bin/true"])
        sleep_bundle = bare_bundle(rootfs, work, ["/bin/sleep", "300"])
        rt.start(spec(rootfs, work, "warm", ("/bin/true",)))  # compile the supervisor once
        rt.wait(spec(rootfs, work, "warm", ("/bin/true",)).name, 10)
        rt.destroy(spec(rootfs, work, "warm", ("/bin/true",)).name)

        xc_true, bare_true, xc_start, bare_start, xc_stop, bare_stop = ([] for _ in range(6))
        for i in range(n):
            s = spec(rootfs, work, f"true{i}", ("/bin/true",))
            t0 = time.perf_counter()
            rt.start(s)
            rt.wait(s.name, 30)
            rt.destroy(s.name)
            xc_true.append(time.perf_counter() - t0)

            cid = f"xctest-bare-true{i}"
            t0 = time.perf_counter()
            subprocess.run(
                ["runc", "--root", rroot, "run", "--bundle", str(true_bundle), cid],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                check=True,
            )
            bare_true.append(time.perf_counter() - t0)

            s = spec(rootfs, work, f"sleep{i}", ("/bin/sleep", "300"))
            t0 = time.perf_counter()
            rt.start(s)
            xc_start.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            rt.stop(s.name, signal.SIGKILL, 5)
            rt.destroy(s.name)
            xc_stop.append(time.perf_counter() - t0)

            cid = f"xctest-bare-sleep{i}"
            t0 = time.perf_counter()
            subprocess.run(
                ["runc", "--root", rroot, "run", "-d", "--bundle", str(sleep_bundle), cid],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                check=True,
            )
            bare_start.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            subprocess.run(["runc", "--root", rroot, "kill", cid, "KILL"], check=True)
            while True:
                st = subprocess.run(
                    ["runc", "--root", rroot, "state", cid], capture_output=True, text=True
                )
                if json.loads(st.stdout)["status"] == "stopped":
                    break
                time.sleep(0.005)
            subprocess.run(["runc", "--root", rroot, "delete", cid], check=True)
            bare_stop.append(time.perf_counter() - t0)
        log.close()

    print(f"jails lifecycle, n={n} (median ms; ratio = xc / bare runc)")
    for label, xc, bare in (
        ("/bin/true run-to-exit+destroy", xc_true, bare_true),
        ("sleeper start-to-running", xc_start, bare_start),
        ("sleeper stop(KILL)+destroy", xc_stop, bare_stop),
    ):
        a, b = median_ms(xc), median_ms(bare)
        print(f"  {label:32s} xc {a:7.1f}   bare {b:7.1f}   ratio {a / b:5.2f}")


if __name__ == "__main__":
    main()
