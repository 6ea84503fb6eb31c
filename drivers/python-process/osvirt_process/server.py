"""Entry point: serve the process driver on a unix socket and print the
osvirt plugin handshake (go-plugin's shape) on stdout:

    1|1|unix|/path/to/process.sock|grpc

Configuration comes from flags or from the environment the daemon sets for
a plugin it starts: OSVIRT_PLUGIN_SOCKET, OSVIRT_PLUGIN_STATE_DIR,
OSVIRT_PLUGIN_PROTOCOL_VERSIONS (refuse to start when we share no version)
and OSVIRT_PLUGIN_LIFELINE=stdin (exit when stdin closes: the daemon died).
SIGTERM stops serving; containers keep running under their monitors."""

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
import tempfile

import grpc

from osvirt.driver.v1 import driver_pb2_grpc
import health_pb2_grpc

from . import cgroups
from .containers import Store
from .service import PROTOCOL_VERSION, Health, ProcessDriver

HANDSHAKE_CORE_VERSION = 1
log = logging.getLogger("osvirt-process")


def parse_args(argv):
    p = argparse.ArgumentParser(prog="osvirt-process-driver", description="osvirt process driver (Python): serves osvirt.driver.v1.DriverService")
    p.add_argument("--socket", default=os.environ.get("OSVIRT_PLUGIN_SOCKET"), help="unix socket to listen on (default: $OSVIRT_PLUGIN_SOCKET, else a temporary directory)")
    p.add_argument("--state-dir", default=os.environ.get("OSVIRT_PLUGIN_STATE_DIR") or "/var/lib/osvirt/drivers/process", help="where container state lives (default: $OSVIRT_PLUGIN_STATE_DIR)")
    p.add_argument("--log-level", default=os.environ.get("OSVIRT_LOG_LEVEL", "info"))
    return p.parse_args(argv)


def clear_stale_socket(path):
    if not os.path.exists(path):
        return
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
    except OSError:
        os.unlink(path)
        return
    finally:
        s.close()
    raise SystemExit("osvirt-process-driver: %s is in use by another process" % path)


async def serve(args):
    wanted = os.environ.get("OSVIRT_PLUGIN_PROTOCOL_VERSIONS")
    if wanted and str(PROTOCOL_VERSION) not in wanted.split(","):
        raise SystemExit("osvirt-process-driver: the daemon speaks driver protocol %s; this driver speaks %d" % (wanted, PROTOCOL_VERSION))
    if os.geteuid() != 0:
        raise SystemExit("osvirt-process-driver: run as root: it creates cgroups under %s" % cgroups.CGROUP_ROOT)
    layout = cgroups.detect()
    store = Store(os.path.abspath(args.state_dir), layout, log)

    tmp = None
    sock = args.socket
    if not sock:
        tmp = tempfile.mkdtemp(prefix="osvirt-process-")
        sock = os.path.join(tmp, "process.sock")
    sock = os.path.abspath(sock)
    os.makedirs(os.path.dirname(sock), exist_ok=True)
    clear_stale_socket(sock)

    server = grpc.aio.server()
    driver_pb2_grpc.add_DriverServiceServicer_to_server(ProcessDriver(store), server)
    health = Health()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    server.add_insecure_port("unix:" + sock)
    await server.start()
    os.chmod(sock, 0o660)
    sys.stdout.write("%d|%d|unix|%s|grpc\n" % (HANDSHAKE_CORE_VERSION, PROTOCOL_VERSION, sock))
    sys.stdout.flush()
    log.info("serving on %s, state in %s, %s", sock, args.state_dir, layout.describe())

    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, done.set)
    if os.environ.get("OSVIRT_PLUGIN_LIFELINE") == "stdin":
        def on_stdin():
            try:
                data = os.read(0, 4096)
            except OSError:
                data = b""
            if not data:
                log.info("the daemon closed our stdin; exiting")
                loop.remove_reader(0)
                done.set()

        loop.add_reader(0, on_stdin)
    await done.wait()
    health.stop()
    await server.stop(1)
    try:
        os.unlink(sock)
    except FileNotFoundError:
        pass
    if tmp:
        os.rmdir(tmp)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(stream=sys.stderr, level=args.log_level.upper(), format="%(asctime)s osvirt-process %(levelname)s %(message)s")
    asyncio.run(serve(args))
