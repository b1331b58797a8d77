"""The driver end to end, each figure next to a baseline measured in the same run.

  python bench/driver_bench.py [--tasks 100] [--starts 20] [--window 60]
  python bench/driver_bench.py --quick            # 10 tasks, 5 starts, 5 s windows

Everything goes through the Nomad-client rig (tests/nomadsim) and the real plugin, against a
zfs-fuse pool, a local registry and runc, like the e2e tests:

1. StartTask-to-running with a cached image (the StartTask call, which returns once the task
   runs, timed by the rig around the gRPC call; also shown: the rig's whole task runner with the
   client's own alloc dir, FIFOs and config encoding) vs the bare sequence the backend runs for
   it: `zfs clone` of the image's snapshot + writing a runc bundle that asks for what the
   backend's does (the three task-dir binds, the memory limit, host network) + `runc run -d`.
   Median, p90 and max of --starts starts, interleaved with as many bare sequences and as many
   starts on a second plugin with `spare_clones { count = 0 }` (a clone in every start; the
   first plugin keeps its default spare, and each measured step waits until its refill is
   done); then --starts starts 4 at a time against as many bare sequences 4 at a time (total
   time). The plugin's own split (image step, the rest) from its log, and the backend's steps
   timed in-process. Goal: ratio <= 1.2.
2. Resident memory with --tasks sleeping tasks: the plugin's RSS (vs the same plugin idle), and
   what each task costs outside itself (its supervisor's RSS/PSS; runc leaves no process).
3. CPU the plugin spends serving TaskStats at 1 s for every task, over --window seconds, vs the
   same plugin over the same window with the streams closed, and vs a bare grpc-aio server
   streaming the same TaskStatsResponse bytes on as many streams (bench/grpc_floor.py) over the
   same window, in its own process: the part of the figure that is grpc's own. Goal: < 5% of
   one core, <= 2x the bare server.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import math
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.grpc_floor import floor_server  # noqa: E402
from driver import stats as st  # noqa: E402
from driver.convert_io import stats_to_proto  # noqa: E402
from tests.fixtures import zpool as zpool_fx  # noqa: E402
from tests.fixtures.images import busybox_image  # noqa: E402
from tests.fixtures.nomad import (  # noqa: E402
    Nomad,
    TaskRun,
    _cleanup,
    _remove_cgroups,
    cgroup_parent,
    pids_with_argv,
    state_dir_path,
)
from tests.fixtures.registry import start_registry  # noqa: E402
from tests.fixtures.runc import runc_usable  # noqa: E402
from tests.nomadsim.client import Rig, build_rig  # noqa: E402
from zfsimage import zfs  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
SLEEPER = 'command = "/bin/sleep"\nargs = ["3600"]'


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK   # utime + stime


def rss_kib(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE // 1024


def pss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


@contextlib.contextmanager
def environment() -> Iterator[tuple[Nomad, int]]:
    """Pool, registry with the busybox image, rig and a launched plugin; all torn down."""
    reason = runc_usable()
    if reason:
        raise SystemExit(f"cannot run: {reason}")
    pool = zpool_fx.create_pool("bench")
    registry = start_registry("plain")
    state_dir = state_dir_path()
    state_dir.mkdir(parents=True, exist_ok=True)
    rig: Rig | None = None
    nomad: Nomad | None = None
    rig_dir = Path(tempfile.mkdtemp(prefix="xc-bench-rig-"))
    try:
        image = busybox_image(registry, repo="bench/busybox")
        (state_dir / "allocs").mkdir(exist_ok=True)
        (state_dir / "volumes").mkdir(exist_ok=True)
        rig = Rig.start(build_rig(rig_dir), stderr_path=state_dir / "nomadsim.log")
        nomad = Nomad(rig, pool, registry, image, state_dir, state_dir / "allocs",
                      state_dir / "volumes")
        pid = int(nomad.launch()["pid"])
        yield nomad, pid
    finally:
        if rig is not None:
            rig.stop()
        _cleanup(state_dir)
        _remove_cgroups(cgroup_parent())
        if nomad is not None:
            subprocess.run(["zfs", "destroy", "-r", "-f", nomad.dataset], capture_output=True,
                           check=False)
        registry.stop()
        zpool_fx.destroy_pool(pool)
        zpool_fx.stop_daemon()
        shutil.rmtree(rig_dir, ignore_errors=True)


def start_task(nomad: Nomad, memory: int = 16) -> tuple[TaskRun, float]:
    t0 = time.perf_counter()
    run = nomad.start(SLEEPER, memory=memory)
    return run, time.perf_counter() - t0


def bare_start(origin: str, dataset: str, work: Path, i: int,
               split: dict[str, list[float]] | None = None) -> tuple[float, str, str]:
    """zfs clone + bundle + runc run -d: what the backend does for a task, and nothing else.
    ``split`` collects the clone's and runc's own times, to set beside the plugin's steps."""
    clone = f"{dataset}/bare{i}"
    mnt = work / f"bare{i}"
    bundle = work / f"bundle{i}"
    cid = f"xctest-{os.getpid()}-bare{i}"
    template = json.loads((work / "config.template.json").read_text())
    t0 = time.perf_counter()
    argv = ["zfs", "clone", "-o", f"mountpoint={mnt}", origin, clone]
    # The host-wide zfs-fuse mount lock is no overhead of ours: an unlocked mount racing another
    # session's can wedge zfs-fuse for the whole host (zfsimage/zfs.py).
    with zfs.mount_lock(argv):
        subprocess.run(argv, check=True, capture_output=True)
    t_clone = time.perf_counter()
    bundle.mkdir()
    template["root"] = {"path": str(mnt), "readonly": False}
    template["linux"]["cgroupsPath"] = f"/{cgroup_parent()}/bare{i}"
    (bundle / "config.json").write_text(json.dumps(template))
    with open(work / "bare.log", "ab") as log:
        t_runc = time.perf_counter()
        subprocess.run(["runc", "--root", str(work / "runc"), "run", "-d", "--bundle",
                        str(bundle), cid], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                       check=True)
    end = time.perf_counter()
    if split is not None:
        split.setdefault("bare zfs clone", []).append(t_clone - t0)
        split.setdefault("bare runc run -d", []).append(end - t_runc)
    return end - t0, cid, clone


def bare_destroy(work: Path, cid: str, clone: str) -> None:
    root = str(work / "runc")
    subprocess.run(["runc", "--root", root, "kill", "--all", cid, "KILL"], capture_output=True,
                   check=False)
    for _ in range(100):
        cp = subprocess.run(["runc", "--root", root, "delete", "--force", cid],
                            capture_output=True, check=False)
        if cp.returncode == 0:
            break
        time.sleep(0.05)
    for _ in range(100):
        if subprocess.run(["zfs", "destroy", clone], capture_output=True).returncode == 0:
            break
        time.sleep(0.05)


def bare_template(work: Path, memory_mib: int = 16) -> None:
    """`runc spec` edited to ask for what the backend asks for a task: host network, the three
    task dirs bind-mounted (/alloc, /local, /secrets), the task's memory limit, sleep 3600."""
    tmp = work / "spec"
    tmp.mkdir()
    subprocess.run(["runc", "spec"], cwd=tmp, check=True)
    cfg = json.loads((tmp / "config.json").read_text())
    cfg["process"]["terminal"] = False
    cfg["process"]["args"] = ["/bin/sleep", "3600"]
    cfg["linux"]["namespaces"] = [n for n in cfg["linux"]["namespaces"] if n["type"] != "network"]
    cfg["mounts"] = [m for m in cfg["mounts"] if m["destination"] not in ("/sys", "/sys/fs/cgroup")]
    for d in ("alloc", "local", "secrets"):
        (work / "taskdirs" / d).mkdir(parents=True)
        cfg["mounts"].append({"destination": f"/{d}", "type": "bind",
                              "source": str(work / "taskdirs" / d),
                              "options": ["rbind", "nosuid", "nodev"]})
    limit = memory_mib << 20
    memory: dict[str, int] = {"limit": limit}
    if Path("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists() or \
            Path("/sys/fs/cgroup/cgroup.controllers").exists():
        memory["swap"] = limit              # as the backend does where swap is accounted
    cfg["linux"].setdefault("resources", {})["memory"] = memory
    (work / "config.template.json").write_text(json.dumps(cfg))


def pct(xs: list[float], q: float) -> float:
    """The q-quantile (0..1) of xs, nearest rank."""
    ys = sorted(xs)
    return ys[min(len(ys) - 1, max(0, math.ceil(q * len(ys)) - 1))]


def plugin_start_steps(nomad: Nomad, task_ids: set[str],
                       instance: str) -> dict[str, list[float]]:
    """The plugin's own account of each start (its "task started" log line): the image step and
    everything after it (clone, spec, supervisor + runc), in ms; ``spare`` 1 per start that ran
    on a spare clone."""
    out: dict[str, list[float]] = {k: [] for k in (
        "image_ms", "start_ms", "spec_ms", "clone_ms", "files_ms", "runtime_ms", "spare")}
    for line in nomad.rig.check("logs", instance=instance)["stderr"]:
        if '"task started"' not in line:
            continue
        with contextlib.suppress(ValueError, KeyError):
            rec = json.loads(line)
            if rec.get("task_id") in task_ids:
                for k in out:
                    if k in rec:  # the split of start_ms is logged by newer plugins only
                        out[k].append(float(rec[k]))
    return out


def wait_for_spare(nomad: Nomad) -> None:
    """Until the plugin's refill after a start is done (a marked idle spare): the next measured
    step, bare or not, must not share the machine with it."""
    marks = nomad.state_dir / "images" / "spares"
    deadline = time.monotonic() + 30
    while not (marks.is_dir() and any(p.name.startswith("spare.") for p in marks.iterdir())):
        if time.monotonic() > deadline:
            raise SystemExit("the plugin made no spare clone within 30 s")
        time.sleep(0.005)


def bench_start(nomad: Nomad, starts: int) -> dict[str, Any]:
    """Interleaved: a start on the plugin (spare clones on, the default), the bare sequence, and
    a start on a second plugin with ``spare_clones { count = 0 }`` (a clone in every start)."""
    work = Path(tempfile.mkdtemp(prefix=f"xctest-{os.getpid()}-bench-"))
    bare_template(work)
    main = nomad.instance
    try:
        warm, _ = start_task(nomad)                 # pulls the image; not measured
        clones = subprocess.run(
            ["zfs", "list", "-H", "-o", "name,origin", "-r", f"{nomad.dataset}/tasks"],
            capture_output=True, text=True, check=True).stdout.split("\n")
        origin = next(line.split("\t")[1] for line in clones
                      if "\t" in line and "@" in line.split("\t")[1])
        nomad.destroy(warm)
        nomad.extra_config = "spare_clones {\n  count = 0\n}"
        nomad.launch("nospare")  # drops the idle spares at its SetConfig, once
        nomad.instance = main
        xc, whole, bare, ids = [], [], [], set()
        cold, cold_ids = [], set()
        bare_split: dict[str, list[float]] = {}
        for i in range(starts):                     # interleaved: drift hits all alike
            wait_for_spare(nomad)
            run, dt = start_task(nomad)
            whole.append(dt)
            xc.append(float(run.reply["start_task_ms"]) / 1000)
            ids.add(run.task_id)
            nomad.destroy(run)
            wait_for_spare(nomad)
            dt, cid, clone = bare_start(origin, nomad.dataset, work, i, bare_split)
            bare.append(dt)
            bare_destroy(work, cid, clone)
            nomad.instance = "nospare"
            try:
                run, _ = start_task(nomad)
                cold.append(float(run.reply["start_task_ms"]) / 1000)
                cold_ids.add(run.task_id)
                nomad.destroy(run)
            finally:
                nomad.instance = main
        steps = plugin_start_steps(nomad, ids, main)
        cold_steps = plugin_start_steps(nomad, cold_ids, "nospare")
        # The same number of starts, 4 at a time on both sides: what contention adds.
        t0 = time.perf_counter()
        runs = start_many(nomad, starts, report=False)
        xc_concurrent = time.perf_counter() - t0
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            list(pool.map(nomad.destroy, runs))
        t0 = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            made = list(pool.map(lambda i: bare_start(origin, nomad.dataset, work, starts + i),
                                 range(starts)))
        bare_concurrent = time.perf_counter() - t0
        for _dt, cid, clone in made:
            bare_destroy(work, cid, clone)
        return {"xc": xc, "bare": bare, "whole": whole, "steps": steps, "cold": cold,
                "cold_steps": cold_steps,
                "bare_split": {k: statistics.median(v) * 1000 for k, v in bare_split.items()},
                "xc_concurrent": xc_concurrent, "bare_concurrent": bare_concurrent}
    finally:
        mounts = Path("/proc/mounts").read_text().splitlines()
        for m in sorted((line.split()[1] for line in mounts
                         if line.split()[1].startswith(str(work))), reverse=True):
            subprocess.run(["umount", "-l", m], capture_output=True, check=False)
        shutil.rmtree(work, ignore_errors=True)


class StepTimer:
    """Wraps methods of one object to time each call (the steps of runtime.start, in-process)."""

    def __init__(self) -> None:
        self.times: dict[str, list[float]] = {}

    def wrap(self, obj: Any, method: str, label: str) -> None:
        fn = getattr(obj, method)

        def timed(*args: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kw)
            finally:
                self.times.setdefault(label, []).append(time.perf_counter() - t0)

        setattr(obj, method, timed)


def bench_phases(nomad: Nomad, starts: int) -> dict[str, float]:
    """The backend steps of one start, called in-process (no gRPC, no rig): where the time of
    StartTask goes. Another store instance on the plugin's dataset and mount root (stores
    share them across processes), its own runtime state."""
    import jails
    import jails.runtime
    import jails.supervisor
    import zfsimage
    from jails import JailSpec
    from tests.fixtures.sweep import test_name

    work = Path(tempfile.mkdtemp(prefix=f"xctest-{os.getpid()}-phases-"))
    out: dict[str, list[float]] = {k: [] for k in (
        "ensure_image (tag HEAD)", "ensure_image (local only)", "clone_rootfs", "runtime.start")}
    opts = zfsimage.RegistryOptions(insecure_registries=(nomad.registry.host,))
    stores = {
        "ensure_image (tag HEAD)": zfsimage.ImageStore(zfsimage.StoreConfig(
            dataset=nomad.dataset, mount_root=nomad.state_dir / "images", registry=opts)),
        "ensure_image (local only)": zfsimage.ImageStore(zfsimage.StoreConfig(
            dataset=nomad.dataset, mount_root=nomad.state_dir / "images", registry=opts,
            revalidate_tags=False)),
    }
    store = stores["ensure_image (tag HEAD)"]
    rt = jails.open_runtime("linux", work / "jails", cgroup_parent=cgroup_parent())
    steps = StepTimer()
    steps.wrap(rt, "sweep_garbage", "  runtime.start: sweep_garbage")
    steps.wrap(rt, "_prepare", "  runtime.start: _prepare (user, pins, OCI config)")
    steps.wrap(rt, "_launch", "  runtime.start: _launch (supervisor + runc run -d)")
    try:
        for i in range(starts):
            for key, st in stores.items():
                t0 = time.perf_counter()
                image = st.ensure_image(nomad.image)
                out[key].append(time.perf_counter() - t0)
            name = test_name(f"phase{i}")
            t0 = time.perf_counter()
            rootfs = store.clone_rootfs(image, name)
            out["clone_rootfs"].append(time.perf_counter() - t0)
            spec = JailSpec(name=name, rootfs=rootfs, argv=("/bin/sleep", "3600"),
                            stdout_path=work / "log", stderr_path=work / "log")
            t0 = time.perf_counter()
            rt.start(spec)
            out["runtime.start"].append(time.perf_counter() - t0)
            rt.destroy(name)
            store.destroy_rootfs(name)
    finally:
        for name in rt.names():
            with contextlib.suppress(Exception):
                rt.destroy(name)
        mounts = Path("/proc/mounts").read_text().splitlines()
        for m in sorted((line.split()[1] for line in mounts
                         if line.split()[1].startswith(str(work))), reverse=True):
            subprocess.run(["umount", "-l", m], capture_output=True, check=False)
        shutil.rmtree(work, ignore_errors=True)
    out.update(steps.times)
    return {k: statistics.median(v) * 1000 for k, v in out.items() if v}


def start_many(nomad: Nomad, n: int, report: bool = True) -> list[TaskRun]:
    done: list[TaskRun] = []

    def one(_: int) -> TaskRun:
        run, _dt = start_task(nomad)
        done.append(run)
        if report and len(done) % 10 == 0:
            print(f"  {len(done)}/{n} tasks running", file=sys.stderr, flush=True)
        return run

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        return list(pool.map(one, range(n)))


def taskstats_message() -> bytes:
    """A TaskStatsResponse as the plugin sends one for a Linux task (every field it measures)."""
    sample = st.TaskStatsSample(
        time.time_ns(),
        st.CpuStats(0.4, 0.3, 0.1, 12.0, measured=(st.SYSTEM_MODE, st.USER_MODE,
                                                   st.TOTAL_TICKS, st.PERCENT)),
        st.MemoryStats(rss=1 << 20, usage=3 << 20, max_usage=4 << 20,
                       measured=(st.RSS, st.MAX_USAGE, st.USAGE)))
    return bytes(stats_to_proto(sample).SerializeToString())


def stream_counts(nomad: Nomad, runs: list[TaskRun]) -> tuple[list[int], list[str]]:
    """Messages each task's TaskStats stream delivered, and a line for each stream that
    delivered none or ended (a task that stopped being served), instead of failing on it."""
    counts, problems = [], []
    for r in runs:
        res = nomad.rig.check("stream_poll", instance=nomad.instance,
                              stream=f"stats:{r.task_id}", min_count=0, wait_s=0)
        n = len(res.get("messages") or [])
        counts.append(n)
        if n == 0 or res.get("ended"):
            why = f"ended ({res.get('end_error') or 'cleanly'})" if res.get("ended") else "open"
            problems.append(f"stats:{r.task_id}: {n} messages, {why}")
    return counts, problems


def window_cpus(pids: list[int], seconds: float) -> list[float]:
    """Percent of one core each of ``pids`` spent over the same window."""
    c0, t0 = [cpu_seconds(p) for p in pids], time.monotonic()
    time.sleep(seconds)
    dt = time.monotonic() - t0
    return [(cpu_seconds(p) - c) / dt * 100.0 for p, c in zip(pids, c0, strict=True)]


def window_cpu(pid: int, seconds: float) -> float:
    return window_cpus([pid], seconds)[0]


def start_rows(start: dict[str, Any], phases: dict[str, float]) -> list[tuple[str, ...]]:
    xc_ms = [x * 1000 for x in start["xc"]]
    bare_ms = [x * 1000 for x in start["bare"]]
    cold_ms = [x * 1000 for x in start["cold"]]
    xc_med, bare_med = statistics.median(xc_ms), statistics.median(bare_ms)
    cold_med = statistics.median(cold_ms)
    whole_med = statistics.median(start["whole"]) * 1000
    rows: list[tuple[str, ...]] = [
        ("StartTask->running, cached image (median)", f"{xc_med:.0f} ms",
         f"zfs clone + runc run -d: {bare_med:.0f} ms", f"{xc_med / bare_med:.2f}x", "<= 1.2x"),
        (f"  p90 / max of {len(xc_ms)}", f"{pct(xc_ms, 0.9):.0f} / {max(xc_ms):.0f} ms",
         f"{pct(bare_ms, 0.9):.0f} / {max(bare_ms):.0f} ms",
         f"{pct(xc_ms, 0.9) / pct(bare_ms, 0.9):.2f}x", ""),
        (f"  {len(xc_ms)} starts 4 at a time, total", f"{start['xc_concurrent'] * 1000:.0f} ms",
         f"{start['bare_concurrent'] * 1000:.0f} ms",
         f"{start['xc_concurrent'] / start['bare_concurrent']:.2f}x", ""),
        ("  with the client's own prep (alloc dir, FIFOs, schema)", f"{whole_med:.0f} ms",
         "", f"{whole_med / bare_med:.2f}x", ""),
        ("  starts that ran on a spare clone", f"{len(start['steps']['spare'])} of {len(xc_ms)}",
         "", "", ""),
        ("  spare clones off (a clone in every start), median", f"{cold_med:.0f} ms",
         f"{bare_med:.0f} ms", f"{cold_med / bare_med:.2f}x", ""),
        (f"  spare clones off, p90 / max of {len(cold_ms)}",
         f"{pct(cold_ms, 0.9):.0f} / {max(cold_ms):.0f} ms",
         f"{pct(bare_ms, 0.9):.0f} / {max(bare_ms):.0f} ms",
         f"{pct(cold_ms, 0.9) / pct(bare_ms, 0.9):.2f}x", ""),
    ]
    rows += [(f"  in the plugin: {k} (median)", f"{statistics.median(v):.1f} ms", "", "", "")
             for k, v in start["steps"].items() if v and k != "spare"]
    rows += [(f"  in the plugin, spare clones off: {k} (median)",
              f"{statistics.median(v):.1f} ms", "", "", "")
             for k, v in start["cold_steps"].items() if v and k in ("clone_ms", "runtime_ms")]
    rows += [(f"  {k} (median)", "", f"{v:.1f} ms", "", "")
             for k, v in start["bare_split"].items()]
    rows += [(f"  in-process {k} (median)", f"{v:.1f} ms", "", "", "")
             for k, v in phases.items()]
    return rows


def print_table(command: str, rows: list[tuple[str, ...]], header: str) -> None:
    print(f"\n$ {command}")
    if header:
        print(header)
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    head = ("measure", "xc", "baseline (same run)", "ratio", "goal")
    widths = [max(w, len(h)) for w, h in zip(widths, head, strict=True)]
    for r in (head, tuple("-" * w for w in widths), *rows):
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=100)
    ap.add_argument("--starts", type=int, default=20)
    # A window covers one full backstop period of the task waiters (jails WAIT_SLICE_S): shorter
    # ones catch that periodic wake in some runs and miss it in others.
    ap.add_argument("--window", type=float, default=60.0, help="seconds per CPU window")
    ap.add_argument("--quick", action="store_true", help="10 tasks, 5 starts, 5 s windows")
    ap.add_argument("--start-only", action="store_true",
                    help="StartTask figures only (no resident tasks, no TaskStats windows)")
    a = ap.parse_args()
    if a.quick:
        a.tasks, a.starts, a.window = 10, 5, 5.0
    command = "python bench/driver_bench.py " + shlex.join(sys.argv[1:])
    with environment() as (nomad, pid):
        print("start latency...", file=sys.stderr, flush=True)
        start = bench_start(nomad, a.starts)
        phases = bench_phases(nomad, a.starts)
        if a.start_only:
            print_table(command, start_rows(start, phases), "")
            return 0
        print(f"starting {a.tasks} tasks...", file=sys.stderr, flush=True)

        idle_rss = rss_kib(pid)
        runs = start_many(nomad, a.tasks)
        time.sleep(2)
        busy_rss = rss_kib(pid)
        tasks_dir = str(nomad.state_dir / "jails" / "tasks")
        sups = pids_with_argv(lambda w: tasks_dir in w)
        sups = [p for p in sups if p != pid]
        sup_rss = [rss_kib(p) for p in sups]
        sup_pss = [pss_kib(p) for p in sups]

        quiet = window_cpu(pid, a.window)
        # The bare server streams over the same window, in its own process: both figures see
        # the same machine (a floor measured before or after drifted by up to 30%).
        with floor_server(a.tasks, taskstats_message()) as (floor_pid, _):
            for run in runs:
                nomad.rig.check("stats_start", instance=nomad.instance, task_id=run.task_id,
                                interval_s=1.0, stream=f"stats:{run.task_id}")
            time.sleep(2)                              # streams settle into their interval
            serving, floor = window_cpus([pid, floor_pid], a.window)
        got, quiet_streams = stream_counts(nomad, runs)

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            list(pool.map(nomad.destroy, runs))

    per_task_plugin = (busy_rss - idle_rss) / max(a.tasks, 1)
    rows = [
        *start_rows(start, phases),
        (f"plugin RSS with {a.tasks} running tasks", f"{busy_rss / 1024:.1f} MiB",
         f"same plugin idle: {idle_rss / 1024:.1f} MiB", f"{busy_rss / idle_rss:.2f}x",
         f"+{per_task_plugin:.0f} KiB/task"),
        ("per-task process outside the task (supervisor)",
         f"RSS {statistics.median(sup_rss) if sup_rss else 0:.0f} KiB, "
         f"PSS {statistics.median(sup_pss) if sup_pss else 0:.0f} KiB",
         f"bare runc -d: no process ({len(sups)} supervisors for {a.tasks} tasks)", "", ""),
        (f"plugin CPU, TaskStats at 1 s for {a.tasks} tasks", f"{serving:.2f}% of a core",
         f"streams closed: {quiet:.2f}%", f"+{serving - quiet:.2f} points", "< 5%"),
        ("  bare grpc-aio streaming the same message as often", "",
         f"{floor:.2f}% of a core", f"{serving / floor:.1f}x" if floor > 0 else "", "<= 2x"),
    ]
    header = (f"tasks={a.tasks} starts={a.starts} window={a.window:.0f}s; "
              f"stats samples per task in the window: min {min(got) if got else 0}, "
              f"max {max(got) if got else 0}\n")
    for line in quiet_streams:
        header += f"\nWARNING: TaskStats stream {line}"
    print_table(command, rows, header)
    return 0


if __name__ == "__main__":
    sys.exit(main())
