"""Each container's cgroup: osvirt-py/<id> in the cgroup v1 pids and freezer
hierarchies (hybrid layout), or /sys/fs/cgroup/osvirt-py/<id> on a pure
cgroup v2 host. The pids controller limits and counts the container's
processes; the freezer (or cgroup.freeze on v2) pauses it."""

import errno
import os
import signal
import time

CGROUP_ROOT = "/sys/fs/cgroup"
PARENT = "osvirt-py"


class Layout:
    def __init__(self, kind, v1=None, root=CGROUP_ROOT):
        self.kind = kind  # "v1" (hybrid or legacy) or "v2"
        self.v1 = v1 or {}  # controller -> mount point
        self.root = root

    @property
    def has_freezer(self):
        return self.kind == "v2" or "freezer" in self.v1

    @property
    def has_pids(self):
        if self.kind == "v2":
            return "pids" in _read(os.path.join(self.root, "cgroup.controllers"), "").split()
        return "pids" in self.v1

    def describe(self):
        if self.kind == "v2":
            return "cgroup v2 at %s" % self.root
        return "cgroup v1 (%s)" % ", ".join("%s at %s" % kv for kv in sorted(self.v1.items()))


def _read(path, default=None):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        if default is None:
            raise
        return default


def _write(path, value):
    with open(path, "w") as f:
        f.write(value)


def detect(root=CGROUP_ROOT):
    """Tell the layout apart from /proc/self/mounts; never assume one."""
    if os.path.exists(os.path.join(root, "cgroup.controllers")):
        return Layout("v2", root=root)
    v1 = {}
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) < 4 or parts[2] != "cgroup" or not parts[1].startswith(root):
                continue
            for opt in parts[3].split(","):
                if opt in ("pids", "freezer"):
                    v1[opt] = parts[1]
    if not v1:
        raise RuntimeError("no cgroup v1 pids or freezer hierarchy and no cgroup v2 under %s" % root)
    return Layout("v1", v1=v1, root=root)


class ContainerCgroup:
    def __init__(self, layout, cid):
        self.layout = layout
        self.id = cid

    def dirs(self):
        if self.layout.kind == "v2":
            return [os.path.join(self.layout.root, PARENT, self.id)]
        return [os.path.join(mnt, PARENT, self.id) for _, mnt in sorted(self.layout.v1.items())]

    def procs_files(self):
        return [os.path.join(d, "cgroup.procs") for d in self.dirs()]

    def _ctl(self, controller):
        if self.layout.kind == "v2":
            return self.dirs()[0]
        mnt = self.layout.v1.get(controller)
        return os.path.join(mnt, PARENT, self.id) if mnt else None

    def create(self, pids_limit=0):
        if self.layout.kind == "v2":
            # Delegate pids to our subtree; the parent holds no processes itself.
            for d in (self.layout.root, os.path.join(self.layout.root, PARENT)):
                os.makedirs(d, exist_ok=True)
                try:
                    _write(os.path.join(d, "cgroup.subtree_control"), "+pids")
                except OSError:
                    pass
        for d in self.dirs():
            os.makedirs(d, exist_ok=True)
        if pids_limit:
            d = self._ctl("pids")
            if not d or not os.path.exists(os.path.join(d, "pids.max")):
                raise RuntimeError("the pids cgroup controller is not available for %s" % self.id)
            _write(os.path.join(d, "pids.max"), str(pids_limit))

    def exists(self):
        return any(os.path.isdir(d) for d in self.dirs())

    def pids(self):
        out = set()
        for f in self.procs_files():
            for line in _read(f, "").split():
                out.add(int(line))
        return sorted(out)

    def freeze(self):
        d = self._ctl("freezer")
        if not d:
            raise RuntimeError("no freezer cgroup controller")
        if self.layout.kind == "v2":
            _write(os.path.join(d, "cgroup.freeze"), "1")
            ok = lambda: "frozen 1" in _read(os.path.join(d, "cgroup.events"), "")
        else:
            _write(os.path.join(d, "freezer.state"), "FROZEN")
            ok = lambda: _read(os.path.join(d, "freezer.state"), "") == "FROZEN"
        end = time.monotonic() + 5
        while not ok():
            if time.monotonic() > end:
                raise RuntimeError("the cgroup did not freeze within 5 s")
            time.sleep(0.01)

    def thaw(self):
        d = self._ctl("freezer")
        if not d or not os.path.isdir(d):
            return
        if self.layout.kind == "v2":
            _write(os.path.join(d, "cgroup.freeze"), "0")
        else:
            _write(os.path.join(d, "freezer.state"), "THAWED")

    def is_frozen(self):
        d = self._ctl("freezer")
        if not d:
            return False
        if self.layout.kind == "v2":
            return "frozen 1" in _read(os.path.join(d, "cgroup.events"), "")
        return _read(os.path.join(d, "freezer.state"), "THAWED") != "THAWED"

    def pids_usage(self):
        d = self._ctl("pids")
        if not d:
            return len(self.pids()), 0
        cur = _read(os.path.join(d, "pids.current"), "")
        mx = _read(os.path.join(d, "pids.max"), "max")
        return (int(cur) if cur.isdigit() else len(self.pids())), (int(mx) if mx.isdigit() else 0)

    def kill_all(self):
        """SIGKILL everything in the cgroup (thawed first: frozen tasks cannot die)."""
        try:
            self.thaw()
        except OSError:
            pass
        for _ in range(200):
            left = self.pids()
            if not left:
                return
            for p in left:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.01)

    def destroy(self):
        """Kill what is left and remove the directories. Idempotent."""
        if not self.exists():
            return
        self.kill_all()
        for d in self.dirs():
            for _ in range(100):
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError as e:
                    if e.errno != errno.EBUSY:
                        raise
                    time.sleep(0.02)
        # The shared osvirt-py/ parent goes with its last container (another
        # container, or another driver instance, keeps it: EBUSY).
        for d in self.dirs():
            try:
                os.rmdir(os.path.dirname(d))
            except OSError:
                pass
