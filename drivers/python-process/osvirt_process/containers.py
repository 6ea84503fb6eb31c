"""Containers on disk and on the host. Each container is a plain process in
its own session and its own cgroup, watched by a monitor (shim.py) that
outlives this driver process. Everything the driver must remember lives in
<state dir>/containers/<id>/ so a restarted driver picks up where the last
one left off:

    spec.json     the spec it was created with (proto JSON)
    launch.json   how the init is entered (for the monitor)
    runtime.json  init and monitor pids with their start times
    exit.json     written by the monitor when the init exits
    init.log      the init's stdout and stderr
"""

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import grpc
from google.protobuf import json_format

from . import cgroups
from .errors import DriverError, invalid, missing_feature, not_found, wrong_state

HERE = os.path.dirname(os.path.abspath(__file__))
PYTHON = sys.executable or "/usr/bin/python3"
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

STOPPED, RUNNING, PAUSED, UNKNOWN = "STOPPED", "RUNNING", "PAUSED", "UNKNOWN"

RLIMIT_NAMES = {
    1: "nofile", 2: "nproc", 3: "as", 4: "rss", 5: "memlock", 6: "locks", 7: "msgqueue", 8: "core",
    9: "cpu", 10: "fsize", 11: "stack", 12: "data", 13: "sigpending", 14: "nice", 15: "rtprio",
}
RLIM_INFINITY = -1


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _write_atomic(path, data):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


def start_time_of(pid):
    """Field 22 of /proc/<pid>/stat: tells a process from a later one with the same pid."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
    except OSError:
        return None
    rest = stat[stat.rindex(")") + 2:].split()
    if rest[0] == "Z":
        return None
    return rest[19]


def alive(pid, start):
    return bool(pid) and start_time_of(pid) == start


class State:
    """What State/Wait report; mirrors osvirt.driver.v1.RuntimeState."""

    def __init__(self, status, init_pid=0, exit_code=0, sig=0, start_time=None, finish_time=None, message=""):
        self.status = status
        self.init_pid = init_pid
        self.exit_code = exit_code
        self.signal = sig
        self.start_time = start_time
        self.finish_time = finish_time
        self.message = message


class Store:
    def __init__(self, state_dir, layout, log):
        self.dir = os.path.join(state_dir, "containers")
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        self.layout = layout
        self.log = log
        self._exit_watch = {}  # id -> asyncio.Task shared by concurrent Waits

    # ---- paths and files

    def cdir(self, cid):
        return os.path.join(self.dir, cid)

    def exists(self, cid):
        return os.path.isdir(self.cdir(cid))

    def cgroup(self, cid):
        return cgroups.ContainerCgroup(self.layout, cid)

    def runtime(self, cid):
        return _read_json(os.path.join(self.cdir(cid), "runtime.json"))

    def exit_record(self, cid):
        return _read_json(os.path.join(self.cdir(cid), "exit.json"))

    def saved_spec(self, cid, spec_cls):
        d = _read_json(os.path.join(self.cdir(cid), "spec.json"))
        spec = spec_cls()
        if d:
            json_format.ParseDict(d, spec, ignore_unknown_fields=True)
        return spec

    # ---- validation

    def validate(self, spec):
        """Refuse what this driver cannot do rather than silently doing less."""
        if spec.HasField("rootfs") and spec.rootfs.WhichOneof("source") not in (None, "host"):
            raise invalid("spec.rootfs", "the process driver runs processes on the host's filesystem; leave rootfs unset or use host: {}")
        p = spec.process
        if not p.args:
            raise invalid("spec.process.args", "is required: the program the container runs")
        if p.tty:
            raise invalid("spec.process.tty", "the process driver has no console")
        mode = spec.network.WhichOneof("mode") if spec.HasField("network") else None
        if mode not in (None, "host"):
            raise invalid("spec.network", "processes share the host's network; leave it unset or use host: {}")
        if spec.hostname or spec.domainname:
            raise invalid("spec.hostname", "processes share the host's UTS namespace")
        if len(spec.mounts):
            raise invalid("spec.mounts", "the process driver makes no mounts")
        if len(spec.devices):
            raise invalid("spec.devices", "the process driver has no device cgroup")
        if spec.HasField("capabilities") and (spec.capabilities.add or spec.capabilities.drop or spec.capabilities.drop_all):
            raise invalid("spec.capabilities", "the process driver does not change capabilities")
        opts = spec.WhichOneof("driver_options")
        if opts not in (None, "plugin"):
            raise invalid("spec.%s" % opts, "options for another driver")
        if opts == "plugin" and spec.plugin.values:
            raise invalid("spec.plugin.values", "the process driver takes no options (got %s)" % ", ".join(sorted(spec.plugin.values)))
        r = spec.resources
        for field in ("memory_limit_bytes", "cpu_weight", "cpu_quota_us", "cpu_period_us", "cpuset_cpus", "cpuset_mems"):
            if getattr(r, field):
                raise invalid("spec.resources.%s" % field, "the process driver only limits pids (resources.pids_limit)")
        if r.pids_limit and not self.layout.has_pids:
            raise missing_feature("the pids cgroup controller", "resources.pids_limit needs it (%s)" % self.layout.describe())
        cwd = p.cwd or "/"
        if not os.path.isdir(cwd):
            raise invalid("spec.process.cwd", "%s is not a directory on the host" % cwd)
        path = dict(e.split("=", 1) for e in [DEFAULT_PATH] + list(p.env)).get("PATH")
        if shutil.which(p.args[0], path=path) is None:
            raise invalid("spec.process.args[0]", "%s is not an executable program on the host" % p.args[0])

    # ---- state

    def state(self, cid):
        if not self.exists(cid):
            raise not_found(cid)
        rt = self.runtime(cid)
        ex = self.exit_record(cid)
        if ex is not None:
            return State(STOPPED, exit_code=ex["exit_code"], sig=ex["signal"], finish_time=ex.get("finished_at"))
        if rt is None:
            return State(STOPPED)
        if alive(rt["init_pid"], rt["init_start"]):
            status = PAUSED if self.cgroup(cid).is_frozen() else RUNNING
            return State(status, init_pid=rt["init_pid"], start_time=rt["start_time"])
        if alive(rt["monitor_pid"], rt["monitor_start"]):
            # The init is gone; its monitor is about to write the exit record.
            return State(RUNNING, init_pid=rt["init_pid"], start_time=rt["start_time"])
        return State(UNKNOWN, message="the monitor is gone and left no exit record")

    def active(self, st):
        return st.status in (RUNNING, PAUSED)

    # ---- lifecycle

    def create(self, cid, spec):
        self.validate(spec)
        os.makedirs(self.cdir(cid), mode=0o700, exist_ok=True)
        _write_atomic(os.path.join(self.cdir(cid), "spec.json"), json_format.MessageToJson(spec) + "\n")

    async def start(self, cid, spec):
        st = self.state(cid)
        if self.active(st):
            raise wrong_state(cid, st.status, "stopped")
        self.validate(spec)
        self.cleanup(cid)
        d = self.cdir(cid)
        for f in ("exit.json", "runtime.json"):
            try:
                os.unlink(os.path.join(d, f))
            except FileNotFoundError:
                pass
        cg = self.cgroup(cid)
        try:
            cg.create(spec.resources.pids_limit)
        except (OSError, RuntimeError) as e:
            raise missing_feature("a cgroup for the container", str(e))
        p = spec.process
        cfg = {
            "args": list(p.args),
            "env": [DEFAULT_PATH] + list(p.env) + ["container=osvirt-process"],
            "cwd": p.cwd or "/",
            "cgroup_procs": cg.procs_files(),
            "rlimits": [
                [RLIMIT_NAMES[r.type], RLIM_INFINITY if r.unlimited else r.soft, RLIM_INFINITY if r.unlimited else r.hard]
                for r in p.rlimits if r.type in RLIMIT_NAMES
            ],
            "no_new_privs": p.no_new_privileges,
        }
        if p.HasField("user"):
            cfg["user"] = {"uid": p.user.uid, "gid": p.user.gid, "groups": list(p.user.additional_gids)}
        _write_atomic(os.path.join(d, "launch.json"), json.dumps(cfg, indent=2) + "\n")

        r, w = os.pipe2(os.O_CLOEXEC)
        try:
            monitor_log = open(os.path.join(d, "monitor.log"), "ab")
            first = subprocess.Popen(
                [PYTHON, "-S", "-E", os.path.join(HERE, "shim.py"), d, str(w)],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=monitor_log,
                pass_fds=(w,), start_new_session=True, close_fds=True,
            )
            monitor_log.close()
        finally:
            os.close(w)
        try:
            line = await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(None, _read_line, r), 15)
        except asyncio.TimeoutError:
            line = b""
        finally:
            os.close(r)
            await asyncio.get_running_loop().run_in_executor(None, first.wait)
        msg = json.loads(line) if line.strip() else {"error": "the monitor did not report within 15 s (see %s)" % os.path.join(d, "monitor.log")}
        if "error" in msg:
            cg.destroy()
            raise DriverError(grpc.StatusCode.FAILED_PRECONDITION, 'container "%s" failed to start: %s' % (cid, msg["error"]))
        rt = {
            "init_pid": msg["init_pid"], "init_start": start_time_of(msg["init_pid"]),
            "monitor_pid": msg["monitor_pid"], "monitor_start": start_time_of(msg["monitor_pid"]),
            "start_time": time.time(),
        }
        if rt["init_start"] is None:
            # It exec'd and already exited; the monitor records how.
            rt["init_start"] = ""
        _write_atomic(os.path.join(d, "runtime.json"), json.dumps(rt, indent=2) + "\n")
        return State(RUNNING, init_pid=rt["init_pid"], start_time=rt["start_time"])

    def cleanup(self, cid):
        """Undo what a run left on the host (stray processes, the cgroup). Idempotent."""
        self.cgroup(cid).destroy()

    async def wait(self, cid):
        st = self.state(cid)
        if not self.active(st):
            return st
        task = self._exit_watch.get(cid)
        if task is None:
            task = asyncio.ensure_future(self._watch_exit(cid))
            self._exit_watch[cid] = task
            task.add_done_callback(lambda _t, cid=cid: self._exit_watch.pop(cid, None))
        return await asyncio.shield(task)

    async def _watch_exit(self, cid):
        while True:
            if not self.exists(cid):
                return State(STOPPED)
            st = self.state(cid)
            if not self.active(st):
                break
            await asyncio.sleep(0.05)
        await asyncio.get_running_loop().run_in_executor(None, self.cleanup, cid)
        return st

    async def _until_stopped(self, cid, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if not self.active(self.state(cid)):
                return True
            await asyncio.sleep(0.02)
        return False

    async def stop(self, cid, sig, timeout_ms):
        st = self.state(cid)
        if st.status == UNKNOWN:
            self.cleanup(cid)
            return st
        if not self.active(st):
            return st
        cg = self.cgroup(cid)
        cg.thaw()
        pid = st.init_pid
        if sig != signal.SIGKILL and timeout_ms > 0:
            _signal(pid, sig)
            if await self._until_stopped(cid, timeout_ms / 1000):
                self.cleanup(cid)
                return self.state(cid)
        _signal(pid, signal.SIGKILL)
        if not await self._until_stopped(cid, 5):
            await asyncio.get_running_loop().run_in_executor(None, cg.kill_all)
            await self._until_stopped(cid, 5)
        self.cleanup(cid)
        return self.state(cid)

    def kill(self, cid, sig):
        st = self.state(cid)
        if not self.active(st):
            raise wrong_state(cid, st.status, "running")
        _signal(st.init_pid, sig)

    def pause(self, cid):
        st = self.state(cid)
        if st.status == PAUSED:
            return
        if st.status != RUNNING:
            raise wrong_state(cid, st.status, "running")
        self.cgroup(cid).freeze()

    def resume(self, cid):
        st = self.state(cid)
        if st.status == RUNNING:
            return
        if st.status != PAUSED:
            raise wrong_state(cid, st.status, "paused")
        self.cgroup(cid).thaw()

    async def delete(self, cid):
        if not self.exists(cid):
            return
        st = self.state(cid)
        if self.active(st) or st.status == UNKNOWN:
            await self.stop(cid, signal.SIGKILL, 0)
        self.cleanup(cid)
        shutil.rmtree(self.cdir(cid), ignore_errors=True)

    def recover(self, cid, spec):
        """After a restart of the driver or the daemon: report, and recreate a
        definition the daemon still has but our state dir lost."""
        if not self.exists(cid):
            self.create(cid, spec)
            return State(STOPPED)
        st = self.state(cid)
        if st.status == STOPPED and self.runtime(cid) is not None:
            # It exited while nobody watched: release what it held.
            self.cleanup(cid)
            try:
                os.unlink(os.path.join(self.cdir(cid), "runtime.json"))
            except FileNotFoundError:
                pass
        return st

    # ---- exec and stats

    def exec_config(self, cid, spec_cls, args, env, cwd, user, tty):
        st = self.state(cid)
        if st.status != RUNNING:
            raise wrong_state(cid, st.status, "running")
        spec = self.saved_spec(cid, spec_cls)
        if not os.path.isdir(cwd):
            raise invalid("start.cwd", "%s is not a directory on the host" % cwd)
        cfg = {
            "args": list(args),
            "env": [DEFAULT_PATH] + list(spec.process.env) + ["container=osvirt-process"] + list(env),
            "cwd": cwd,
            "cgroup_procs": self.cgroup(cid).procs_files(),
            "ctty": tty,
        }
        if user is not None:
            cfg["user"] = user
        elif spec.process.HasField("user"):
            u = spec.process.user
            cfg["user"] = {"uid": u.uid, "gid": u.gid, "groups": list(u.additional_gids)}
        return cfg

    def stats(self, cid):
        st = self.state(cid)
        if not self.active(st):
            raise wrong_state(cid, st.status, "running or paused")
        cg = self.cgroup(cid)
        pids = cg.pids()
        cur, limit = cg.pids_usage()
        tick = os.sysconf("SC_CLK_TCK")
        page = os.sysconf("SC_PAGE_SIZE")
        user = system = rss = 0
        for p in pids:
            try:
                with open("/proc/%d/stat" % p) as f:
                    rest = f.read().rsplit(")", 1)[1].split()
                user += int(rest[11])
                system += int(rest[12])
                rss += int(rest[21]) * page
            except (OSError, IndexError, ValueError):
                continue
        ns = 1_000_000_000 // tick
        return {"pids_current": cur, "pids_limit": limit, "cpu_user_ns": user * ns, "cpu_system_ns": system * ns, "memory_usage_bytes": rss}


def _read_line(fd):
    buf = b""
    while not buf.endswith(b"\n"):
        b = os.read(fd, 4096)
        if not b:
            break
        buf += b
    return buf


def _signal(pid, sig):
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass

