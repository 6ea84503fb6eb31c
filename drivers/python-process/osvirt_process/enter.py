"""Become a container process and exec it: own session, the container's
cgroups (joined by the process itself, so nothing it forks escapes),
resource limits, user and groups, no_new_privs, working directory.

Used in two ways: imported by the monitor (shim.py) in the forked child
that becomes the init, and run as a script for exec, so that the gRPC
server never forks with threads running:
    python3 -S -E enter.py '<json config>'
Only the standard library, so it runs with -S."""

import ctypes
import fcntl
import json
import os
import resource
import sys
import termios

PR_SET_NO_NEW_PRIVS = 38

# Linux resource numbers; the resource module lacks a few (RLIMIT_LOCKS).
RLIMITS = {
    "cpu": 0, "fsize": 1, "data": 2, "stack": 3, "core": 4, "rss": 5, "nproc": 6, "nofile": 7,
    "memlock": 8, "as": 9, "locks": 10, "sigpending": 11, "msgqueue": 12, "nice": 13, "rtprio": 14,
}


def enter_and_exec(cfg):
    """Never returns: execs cfg["args"] or raises OSError/ValueError."""
    if os.getsid(0) != os.getpid():
        os.setsid()
    for procs in cfg.get("cgroup_procs", []):
        with open(procs, "w") as f:
            f.write(str(os.getpid()))
    if cfg.get("ctty"):
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    for name, soft, hard in cfg.get("rlimits", []):
        resource.setrlimit(RLIMITS[name], (soft, hard))
    user = cfg.get("user")
    if user is not None:
        os.setgroups(user.get("groups", []))
        os.setgid(user["gid"])
        os.setuid(user["uid"])
    if cfg.get("no_new_privs"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    os.chdir(cfg.get("cwd") or "/")
    env = dict(e.split("=", 1) for e in cfg.get("env", []))
    args = cfg["args"]
    os.execvpe(args[0], args, env)


def main():
    cfg = json.loads(sys.argv[1])
    try:
        enter_and_exec(cfg)
    except OSError as e:
        sys.stderr.write("osvirt-process: cannot run %s: %s\n" % (cfg["args"][0], e.strerror or e))
        os._exit(126 if e.errno in (13,) else 127)
    except Exception as e:  # a bad config: say so in the process's stderr
        sys.stderr.write("osvirt-process: cannot run %s: %s\n" % (cfg["args"][0], e))
        os._exit(127)


if __name__ == "__main__":
    main()
