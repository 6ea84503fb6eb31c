"""The per-container monitor (like containerd's shim or conmon): the init's
parent, so that the container outlives the driver process and its exit
status is never lost. Started by the driver as
    python3 -S -E shim.py <container dir> <ready fd>
it detaches (forks again; the driver reaps the first process at once),
forks the init (which enters the container and execs), reports
{"init_pid", "monitor_pid"} or {"error"} as one JSON line on the ready fd,
waits for the init and writes exit.json atomically. Standard library only."""

import json
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import enter  # noqa: E402  (a sibling module; -S leaves sys.path alone)


def write_atomic(path, data):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


def main():
    cdir = sys.argv[1]
    ready = int(sys.argv[2])
    with open(os.path.join(cdir, "launch.json")) as f:
        cfg = json.load(f)

    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    for s in (signal.SIGHUP, signal.SIGINT, signal.SIGPIPE):
        signal.signal(s, signal.SIG_IGN)

    log = os.open(os.path.join(cdir, "init.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)
    err_r, err_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        try:
            os.close(err_r)
            os.close(ready)
            for s in (signal.SIGHUP, signal.SIGINT, signal.SIGPIPE):
                signal.signal(s, signal.SIG_DFL)
            null = os.open("/dev/null", os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(log, 1)
            os.dup2(log, 2)
            enter.enter_and_exec(cfg)
        except BaseException as e:  # exec failed: tell the monitor why
            msg = "%s: %s" % (cfg["args"][0], getattr(e, "strerror", None) or e)
            os.write(err_w, msg.encode()[:4000])
        os._exit(127)

    os.close(err_w)
    chunks = []
    while True:
        b = os.read(err_r, 4096)
        if not b:
            break
        chunks.append(b)
    os.close(err_r)
    if chunks:
        os.waitpid(pid, 0)
        os.write(ready, (json.dumps({"error": b"".join(chunks).decode(errors="replace")}) + "\n").encode())
        os._exit(1)
    os.write(ready, (json.dumps({"init_pid": pid, "monitor_pid": os.getpid()}) + "\n").encode())
    os.close(ready)

    while True:
        try:
            _, status = os.waitpid(pid, 0)
            break
        except ChildProcessError:
            status = 0
            break
    if os.WIFSIGNALED(status):
        rec = {"exit_code": 128 + os.WTERMSIG(status), "signal": os.WTERMSIG(status)}
    else:
        rec = {"exit_code": os.WEXITSTATUS(status), "signal": 0}
    rec["finished_at"] = time.time()
    write_atomic(os.path.join(cdir, "exit.json"), json.dumps(rec) + "\n")
    os._exit(0)


if __name__ == "__main__":
    main()
