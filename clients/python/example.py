#!/usr/bin/python3
"""osvirt from Python: stubs generated from proto/ (./generate.sh), nothing
else. Discovers the API through server reflection, then creates, starts,
execs in, checkpoints (when the driver declares it) and deletes a container.

    ./generate.sh
    /usr/bin/python3 example.py --connect unix:///run/osvirt/osvirt.sock --driver lxc

Uses Debian's python3-grpcio and python3-protobuf (/usr/bin/python3)."""

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen"))

import grpc  # noqa: E402
from google.protobuf import json_format  # noqa: E402

from osvirt.v1 import container_pb2, container_service_pb2, container_service_pb2_grpc  # noqa: E402
from osvirt.v1 import system_service_pb2, system_service_pb2_grpc  # noqa: E402
import reflection_pb2  # noqa: E402
import reflection_pb2_grpc  # noqa: E402

# A spec each driver in this repository can run; anything else: --spec-json.
DEFAULT_SPECS = {
    "lxc": {"driver": "lxc", "rootfs": {"template": "busybox"}, "network": {"none": {}}},
    "process": {"driver": "process", "process": {"args": ["/bin/sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]}},
}


def step(msg):
    print("==> " + msg, flush=True)


def list_services(channel):
    """grpc.reflection.v1: ask the server which services it offers."""
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10)
    for r in replies:
        return sorted(s.name for s in r.list_services_response.service)
    return []


def exec_in(containers, name, args):
    """ExecContainer: a bidirectional stream; the first message is `start`."""

    def requests():
        yield container_service_pb2.ExecContainerRequest(start=container_service_pb2.ExecStart(name=name, args=args))
        yield container_service_pb2.ExecContainerRequest(close_stdin=True)

    out, err, code = b"", b"", None
    for r in containers.ExecContainer(requests(), timeout=60):
        which = r.WhichOneof("message")
        if which == "stdout":
            out += r.stdout
        elif which == "stderr":
            err += r.stderr
        elif which == "exit":
            code = r.exit.exit_code
    return out.decode(), err.decode(), code


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connect", default=os.environ.get("OSVIRT_CONNECT", "unix:///run/osvirt/osvirt.sock"))
    ap.add_argument("--driver", default="lxc")
    ap.add_argument("--name", default="py-example")
    ap.add_argument("--spec-json", help="ContainerSpec in the proto's JSON mapping (default: one for lxc or process)")
    a = ap.parse_args()

    spec = container_pb2.ContainerSpec()
    if a.spec_json:
        json_format.Parse(a.spec_json, spec)
    else:
        json_format.ParseDict(DEFAULT_SPECS.get(a.driver, {"driver": a.driver}), spec)
    spec.driver = a.driver

    channel = grpc.insecure_channel(a.connect)  # unix:///path works as a target
    containers = container_service_pb2_grpc.ContainerServiceStub(channel)
    system = system_service_pb2_grpc.SystemServiceStub(channel)

    step("services (server reflection): " + ", ".join(list_services(channel)))
    v = system.GetVersion(system_service_pb2.GetVersionRequest(), timeout=10)
    step("daemon %s, API %s, kernel %s" % (v.version, v.api_version, v.kernel))
    drivers = {d.name: d for d in system.ListDrivers(system_service_pb2.ListDriversRequest(), timeout=10).drivers}
    if a.driver not in drivers:
        sys.exit("no driver %r here (have: %s)" % (a.driver, ", ".join(sorted(drivers))))
    drv = drivers[a.driver]
    step("driver %s: capabilities %s" % (drv.name, ", ".join(drv.capabilities) or "none"))

    name = a.name
    try:
        step("create %s" % name)
        containers.CreateContainer(container_service_pb2.CreateContainerRequest(name=name, spec=spec), timeout=120)
        step("start %s" % name)
        ct = containers.StartContainer(container_service_pb2.StartContainerRequest(name=name), timeout=120).container
        step("running, init pid %d" % ct.status.init_pid)

        if "exec" in drv.capabilities:
            out, err, code = exec_in(containers, name, ["/bin/sh", "-c", "echo hello from $(uname -s) in osvirt; exit 3"])
            step("exec: stdout %r, stderr %r, exit code %s" % (out, err, code))
            if code != 3 or "hello from" not in out:
                sys.exit("exec did not return what it should")
        else:
            step("skipping exec: driver %s does not declare the exec capability" % drv.name)

        if "checkpoint" in drv.capabilities:
            cp = containers.CheckpointContainer(
                container_service_pb2.CheckpointContainerRequest(name=name, checkpoint="py-cp", options=container_pb2.CheckpointOptions(leave_running=True)),
                timeout=300,
            ).checkpoint
            step("checkpoint %s written (criu %s)" % (cp.name, cp.criu_version))
            containers.DeleteCheckpoint(container_service_pb2.DeleteCheckpointRequest(name=name, checkpoint=cp.name), timeout=60)
        else:
            why = [m for m in drv.messages if m.startswith("checkpoint:")]
            step("skipping checkpoint: driver %s does not declare the checkpoint capability%s" % (drv.name, " (%s)" % why[0] if why else ""))
    except grpc.RpcError as e:
        print("osvirt: %s: %s" % (e.code().name, e.details()), file=sys.stderr)
        return 1
    finally:
        step("delete %s" % name)
        try:
            containers.DeleteContainer(container_service_pb2.DeleteContainerRequest(name=name, force=True, allow_missing=True), timeout=120)
        except grpc.RpcError as e:
            print("osvirt: delete: %s: %s" % (e.code().name, e.details()), file=sys.stderr)
        channel.close()
    step("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
