"""Every job in examples/nomad/, run as it is through ``nomadsim run-job`` against real
components: the agent file's plugin block configures the installed plugin, the task goes through
the rig's task runner (alloc dir, logmon FIFOs, StartTask, kill sequence, DestroyTask).

Only addresses are rewritten (the example files name the demo's pool, registry and host path);
each rewrite must hit, so an example that changes shape fails here instead of silently running
something else.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from driver.install import install
from tests.fixtures.clones import task_clones
from tests.fixtures.network import http_get, net_bridge, net_prefix, remove_by_name, test_pool
from tests.fixtures.network import leftovers as net_leftovers
from tests.fixtures.nomad import _cleanup, _remove_cgroups
from tests.fixtures.runc import runc_usable
from tests.fixtures.sweep import test_name

pytestmark = [pytest.mark.root, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "nomad"
GREETING = "greetings from the host"


def _demo_image_module() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("demo_image", ROOT / "scripts" / "demo_image.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def rewrite(text: str, replacements: dict[str, str], what: str) -> str:
    for old, new in replacements.items():
        assert old in text, f"{what} no longer contains {old!r}; update this test"
        text = text.replace(old, new)
    return text


@dataclass
class Examples:
    rig: Path
    state_dir: Path
    plugin_dir: Path
    agent: Path
    jobs: Path
    dataset: str
    cgroup_parent: str

    def argv(self, job: str, *extra: str) -> list[str]:
        return [str(self.rig), "run-job", "--plugin-dir", str(self.plugin_dir),
                "--config", str(self.agent), "--alloc-root", str(self.state_dir / "allocs"),
                "--summary", str(self.state_dir / f"{job}.summary.json"), *extra,
                str(self.jobs / f"{job}.nomad.hcl")]

    def env(self) -> dict[str, str]:
        return {**os.environ, "XC_CGROUP_PARENT": self.cgroup_parent}

    def run(self, job: str, *extra: str, timeout: float = 180) -> tuple[int, str, dict[str, Any]]:
        # Its own process group: on a timeout the plugin run-job launched goes too, not only
        # run-job (the plugin would outlive the test otherwise).
        proc = subprocess.Popen(self.argv(job, *extra), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env=self.env(),
                                start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            pytest.fail(f"run-job {job} did not finish in {timeout:g} s; its output:\n{out}")
        return proc.returncode, out, self.summary(job)

    def summary(self, job: str) -> dict[str, Any]:
        return dict(json.loads((self.state_dir / f"{job}.summary.json").read_text()))

    def leftovers(self) -> list[str]:
        """Containers and task clones (not idle spares) that exist now."""
        left = []
        runc_root = self.state_dir / "jails" / "runc"
        cp = subprocess.run(["runc", "--root", str(runc_root), "list", "--format", "json"],
                            capture_output=True, text=True, check=False)
        if cp.returncode == 0:
            left += [c["id"] for c in json.loads(cp.stdout or "null") or []]
        left += task_clones(self.dataset, self.state_dir / "images")  # idle spares stay
        left += [str(p) for p in (self.state_dir / "allocs").glob("*")]
        net = net_leftovers(net_prefix(), net_bridge(), self.state_dir)
        left += [*net.netns, *net.chains, *net.bridge_ports, *net.leases]
        return left


@pytest.fixture(scope="module")
def examples(zpool: Any, registry: Any, nomad_rig_binary: Path) -> Iterator[Examples]:
    reason = runc_usable()
    if reason:
        pytest.skip(reason)
    rig = nomad_rig_binary       # the session's build of the rig (tests/fixtures/nomad.py)
    _demo_image_module().push_demo(registry.host)
    # "-nomad" last: the nomad fixture module's sweep removes this dir and its cgroups if this
    # session dies before its teardown.
    name = test_name("examples-nomad")
    state_dir = Path("/tmp") / name
    state_dir.mkdir()
    (state_dir / "allocs").mkdir()
    volume = state_dir / "volume"
    volume.mkdir()
    (volume / "greeting.txt").write_text(GREETING + "\n")
    plugin_dir = state_dir / "plugins"
    install(plugin_dir, python=sys.executable)
    dataset = f"{zpool.name}/xcex"
    addresses = {"127.0.0.1:5000": registry.host, "/srv/xc-demo": str(volume)}
    agent = state_dir / "agent.hcl"
    agent.write_text(rewrite((EXAMPLES / "agent.hcl").read_text(), {
        **addresses, '"xcdemo/xc"': f'"{dataset}"',
        '"/var/lib/nomad-driver-xc"': f'"{state_dir}"',
        # task networks named after this session (swept by tests/fixtures/network.py)
        '"xcbr0"': f'"{net_bridge()}"\n      name_prefix = "{net_prefix()}"',
        '"10.213.0.0/16"': f'"{test_pool()}"'}, "agent.hcl"))
    jobs = state_dir / "jobs"
    jobs.mkdir()
    for job in EXAMPLES.glob("*.nomad.hcl"):
        text = job.read_text()
        used = {k: v for k, v in addresses.items() if k in text}
        (jobs / job.name).write_text(rewrite(text, used, job.name))
    ex = Examples(rig, state_dir, plugin_dir, agent, jobs, dataset, name)
    try:
        yield ex
    finally:
        _cleanup(state_dir)
        _remove_cgroups(name)
        subprocess.run(["zfs", "destroy", "-r", "-f", dataset], capture_output=True, check=False)
        with contextlib.suppress(Exception):
            remove_by_name(net_prefix(), net_bridge())


def test_every_example_job_is_covered() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.nomad.hcl")) == [
        "bridge.nomad.hcl", "hello.nomad.hcl", "oom.nomad.hcl", "service.nomad.hcl",
        "volume.nomad.hcl", "web.nomad.hcl"]


def test_hello_prints_from_the_image_with_events_and_stats(examples: Examples) -> None:
    rc, out, s = examples.run("hello")
    assert rc == 0, out
    assert s["result"] == {"exit_code": 0, "signal": 0, "oom_killed": False}
    demo = _demo_image_module()
    assert s["stdout"] == [
        demo.MOTD.strip(),
        "hello from xc, task hello of job hello",
        "running as root in /, greeting=hi",
        "alloc, local and secrets dirs are mounted",
        "goodbye",
    ], out
    assert s["stderr"] == ["this line goes to stderr"]
    # What run-job printed, in the order it arrived.
    printed = [line.split(" | ", 1)[1] for line in out.splitlines() if line.startswith("stdout | ")]
    assert printed == s["stdout"]
    assert any(e["message"] for e in s["events"]), out
    assert s["stats"], f"no stats sample while the task slept 2 s:\n{out}"
    mem = s["stats"][0]["agg_resource_usage"]["memory"]
    assert int(mem["rss"]) > 0 or int(mem["usage"]) > 0, s["stats"][0]
    assert examples.leftovers() == []


def test_service_runs_until_stopped_and_shuts_down_on_its_kill_signal(examples: Examples
                                                                      ) -> None:
    rc, out, s = examples.run("service", "--run-for", "4s")
    assert rc == 0, out
    assert s["stopped"] is True
    ticks = [line for line in s["stdout"] if line.startswith("ticker: tick ")]
    assert ticks[:2] == ["ticker: tick 1", "ticker: tick 2"], out
    assert s["stdout"][-1] == "ticker: got SIGTERM, shutting down", out
    assert s["result"] == {"exit_code": 0, "signal": 0, "oom_killed": False}
    assert "StopTask: kill_signal SIGTERM, kill_timeout 5s" in out
    assert examples.leftovers() == []


def run_job_live(examples: Examples, job: str
                 ) -> tuple[subprocess.Popen[str], queue.Queue[str], threading.Thread]:
    """run-job for ``job`` in its own session, its output lines queued by a reader thread (so
    a job that never prints fails the test in bounded time instead of blocking on readline)."""
    proc = subprocess.Popen(examples.argv(job, "--run-for", "10m"), env=examples.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    stdout = proc.stdout
    reader = threading.Thread(target=lambda: [lines.put(x) for x in iter(stdout.readline, "")],
                              daemon=True)
    reader.start()
    return proc, lines, reader


def test_service_stops_when_run_job_is_interrupted(examples: Examples) -> None:
    proc, lines, reader = run_job_live(examples, "service")
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 120
        while "ticker: tick 2" not in (seen[-1] if seen else ""):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (proc.poll() is not None and lines.empty()):
                pytest.fail("the service did not tick twice:\n" + "".join(seen))
            try:
                seen.append(lines.get(timeout=min(remaining, 1.0)))
            except queue.Empty:
                continue
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        reader.join(10)
        rest = _drain(lines)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # run-job and the plugin it launched
            proc.wait()
    out = "".join(seen) + rest
    assert proc.returncode == 0, out
    assert "==> got interrupt: stopping the task" in out
    assert "stdout | ticker: got SIGTERM, shutting down" in out
    assert examples.summary("service")["stopped"] is True
    assert examples.leftovers() == []


def test_bridge_job_runs_in_its_own_network_with_the_groups_dns(examples: Examples) -> None:
    rc, out, s = examples.run("bridge")
    assert rc == 0, out
    net = s["network"]
    assert net["mode"] == "bridge" and net["address"], out
    assert f"==> network bridge: the alloc is at {net['address']}" in out

    def section(name: str) -> list[str]:
        lines = s["stdout"]
        start = lines.index(f"--- {name}") + 1
        end = next(i for i in range(start, len(lines)) if lines[i].startswith("--- "))
        return lines[start:end]

    interfaces = {ln.split(":", 1)[0].strip() for ln in section("/proc/net/dev") if ":" in ln}
    assert interfaces == {"lo", "eth0"}, out
    alloc_id = s["task_id"].split("/")[0]
    assert f"{net['address']} {alloc_id[:8]}" in section("/etc/hosts"), out
    assert s["stdout"][0] == f"hostname: {alloc_id[:8]}"
    assert [ln for ln in section("/etc/resolv.conf") if not ln.startswith("#")] == [
        "nameserver 10.0.0.53", "search service.consul", "options ndots:2"], out
    assert not Path(net["path"]).exists(), "run-job must delete the alloc's netns"
    assert examples.leftovers() == []


def test_oom_job_is_reported_oom_killed(examples: Examples) -> None:
    rc, out, s = examples.run("oom")
    assert "result" in s, out
    assert s["result"]["oom_killed"] is True, out
    assert s["result"]["signal"] == signal.SIGKILL or s["result"]["exit_code"] == 137, out
    assert rc == 137, out
    assert s["stdout"] == ["hog: asking for 64 MB under a 32 MB limit"]
    assert "oom killed True" in out.replace("true", "True")
    assert examples.leftovers() == []


def test_volume_job_reads_the_allowed_host_path(examples: Examples) -> None:
    rc, out, s = examples.run("volume")
    assert rc == 0, out
    assert s["stdout"] == [f"reader: the host says: {GREETING}", "reader: a note in the task dir",
                           "reader: /data is read-only"], out
    assert not (examples.state_dir / "volume" / "new-file").exists()
    assert examples.leftovers() == []


def test_a_host_path_outside_the_allow_list_is_refused(examples: Examples) -> None:
    job = examples.jobs / "volume.nomad.hcl"
    bad = examples.jobs / "volume-denied.nomad.hcl"
    elsewhere = examples.state_dir / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    bad.write_text(job.read_text().replace(str(examples.state_dir / "volume"), str(elsewhere)))
    started = time.monotonic()
    rc, out, s = examples.run("volume-denied", timeout=120)
    assert rc == 1, out
    assert "StartTask" in s["error"] and str(elsewhere) in s["error"], s["error"]
    assert examples.leftovers() == [], f"after {time.monotonic() - started:.1f} s"
    shutil.rmtree(elsewhere)


def _drain(q: queue.Queue[str]) -> str:
    out = []
    while True:
        try:
            out.append(q.get_nowait())
        except queue.Empty:
            return "".join(out)


def test_web_job_runs_two_instances_each_on_its_own_published_port(examples: Examples) -> None:
    proc, lines, reader = run_job_live(examples, "web")
    seen: list[str] = []
    ports: dict[int, int] = {}
    try:
        deadline = time.monotonic() + 180
        while sum("stdout | web: serving" in ln for ln in seen) < 2:
            if time.monotonic() > deadline or (proc.poll() is not None and lines.empty()):
                pytest.fail("the two instances did not come up:\n" + "".join(seen))
            try:
                seen.append(lines.get(timeout=1.0))
            except queue.Empty:
                continue
        for ln in seen:  # "[<index>] ==> port "http": 127.0.0.1:<port> -> 8080"
            if '==> port "http": 127.0.0.1:' in ln:
                ports[int(ln[1:ln.index("]")])] = int(ln.rsplit(":", 1)[1].split()[0])
        assert sorted(ports) == [0, 1] and ports[0] != ports[1], "".join(seen)
        for index, port in ports.items():
            assert f"hello from web instance {index}" in http_get("127.0.0.1", port), "".join(seen)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        reader.join(10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    out = "".join(seen) + _drain(lines)
    assert proc.returncode == 0, out
    s = examples.summary("web")
    regs = s["services"]
    assert [r["service"] for r in regs] == ["web", "web"], regs
    assert all(r["provider"] == "nomad" and r["address_mode"] == "driver" and r["port"] == 8080
               and not r.get("error") for r in regs), regs
    # Each instance registers its own address, the one its driver network has.
    by_alloc = {a["alloc_id"]: a for a in s["allocs"]}
    for r in regs:
        assert r["address"] == by_alloc[r["alloc_id"]]["driver_network"]["ip"], (r, s["allocs"])
    assert regs[0]["address"] != regs[1]["address"]
    assert examples.leftovers() == []
