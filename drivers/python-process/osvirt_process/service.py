"""osvirt.driver.v1.DriverService for the process driver (grpc.aio), and
grpc.health.v1.Health. Undeclared capabilities (console, checkpoint) are
left to the generated base class, which answers UNIMPLEMENTED."""

import asyncio
import fcntl
import functools
import json
import logging
import os
import pty
import signal
import struct
import termios
import time

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from osvirt.driver.v1 import driver_pb2, driver_pb2_grpc
from osvirt.v1 import container_pb2
import health_pb2
import health_pb2_grpc

from . import containers
from .containers import PAUSED, RUNNING, STOPPED, UNKNOWN
from .errors import DriverError, invalid

VERSION = "0.1.0"
PROTOCOL_VERSION = 1
SERVICE = "osvirt.driver.v1.DriverService"
ENTER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "enter.py")
log = logging.getLogger("osvirt-process")

STATUS = {
    STOPPED: driver_pb2.RUNTIME_STATUS_STOPPED,
    RUNNING: driver_pb2.RUNTIME_STATUS_RUNNING,
    PAUSED: driver_pb2.RUNTIME_STATUS_PAUSED,
    UNKNOWN: driver_pb2.RUNTIME_STATUS_UNKNOWN,
}


def _ts(seconds):
    t = Timestamp()
    t.FromNanoseconds(int(seconds * 1e9))
    return t


def to_proto(st):
    rs = driver_pb2.RuntimeState(status=STATUS[st.status], init_pid=st.init_pid, exit_code=st.exit_code, signal=st.signal, message=st.message)
    if st.start_time:
        rs.start_time.CopyFrom(_ts(st.start_time))
    if st.finish_time:
        rs.finish_time.CopyFrom(_ts(st.finish_time))
    return rs


def require_id(cid):
    if not cid:
        raise invalid("id", "is required")
    return cid


def rpc(fn):
    """Turn DriverError into its status; anything else is INTERNAL, logged here."""

    @functools.wraps(fn)
    async def wrapper(self, request, context):
        try:
            return await fn(self, request, context)
        except DriverError as e:
            await context.abort(e.code, e.message)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 (the one place that catches everything)
            if isinstance(e, grpc.aio.AbortError):
                raise
            log.exception("%s failed", fn.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error in the process driver (%s); see its log" % type(e).__name__)

    return wrapper


class ProcessDriver(driver_pb2_grpc.DriverServiceServicer):
    def __init__(self, store):
        self.store = store
        self.caps = ["exec", "stats"]
        self.messages = []
        if store.layout.has_freezer:
            self.caps.insert(0, "pause")
        else:
            self.messages.append("pause: no freezer cgroup controller (%s)" % store.layout.describe())

    async def _blocking(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    @rpc
    async def GetInfo(self, request, context):
        return driver_pb2.GetInfoResponse(name="process", version=VERSION, protocol_version=PROTOCOL_VERSION, capabilities=self.caps, messages=self.messages)

    @rpc
    async def Validate(self, request, context):
        require_id(request.id)
        self.store.validate(request.spec)
        return driver_pb2.ValidateResponse()

    @rpc
    async def Create(self, request, context):
        self.store.create(require_id(request.id), request.spec)
        return driver_pb2.CreateResponse()

    @rpc
    async def Start(self, request, context):
        st = await self.store.start(require_id(request.id), request.spec)
        log.info("started %s: init pid %d", request.id, st.init_pid)
        return driver_pb2.StartResponse(state=to_proto(st))

    @rpc
    async def Stop(self, request, context):
        st = await self.store.stop(require_id(request.id), request.signal or signal.SIGTERM, request.timeout_ms)
        return driver_pb2.StopResponse(state=to_proto(st))

    @rpc
    async def Kill(self, request, context):
        self.store.kill(require_id(request.id), request.signal or signal.SIGKILL)
        return driver_pb2.KillResponse()

    @rpc
    async def Pause(self, request, context):
        if "pause" not in self.caps:
            raise DriverError(grpc.StatusCode.FAILED_PRECONDITION, self.messages[0])
        await self._blocking(self.store.pause, require_id(request.id))
        return driver_pb2.PauseResponse()

    @rpc
    async def Resume(self, request, context):
        if "pause" not in self.caps:
            raise DriverError(grpc.StatusCode.FAILED_PRECONDITION, self.messages[0])
        self.store.resume(require_id(request.id))
        return driver_pb2.ResumeResponse()

    @rpc
    async def Delete(self, request, context):
        await self.store.delete(require_id(request.id))
        return driver_pb2.DeleteResponse()

    @rpc
    async def State(self, request, context):
        return driver_pb2.StateResponse(state=to_proto(self.store.state(require_id(request.id))))

    @rpc
    async def Wait(self, request, context):
        return driver_pb2.WaitResponse(state=to_proto(await self.store.wait(require_id(request.id))))

    @rpc
    async def Recover(self, request, context):
        out = driver_pb2.RecoverResponse()
        for item in request.containers:
            try:
                st = self.store.recover(require_id(item.id), item.spec)
            except DriverError as e:
                st = containers.State(UNKNOWN, message=e.message)
            out.states[item.id].CopyFrom(to_proto(st))
        return out

    # This driver's options join no other container's namespaces.
    @rpc
    async def Dependencies(self, request, context):
        require_id(request.id)
        return driver_pb2.DependenciesResponse()

    @rpc
    async def Stats(self, request, context):
        s = self.store.stats(require_id(request.id))
        stats = container_pb2.ContainerStats(name=request.id, cpu_usage_ns=s["cpu_user_ns"] + s["cpu_system_ns"], **s)
        stats.time.CopyFrom(_ts(time.time()))
        return driver_pb2.StatsResponse(stats=stats)

    # Capabilities this driver does not declare: answer UNIMPLEMENTED, as the
    # contract asks (the generated base class would log a traceback first).
    async def Console(self, request_iterator, context):
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, 'driver "process" does not support console')
        yield  # an async generator, like every streaming handler

    async def Checkpoint(self, request, context):
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, 'driver "process" does not support checkpoint')

    async def Restore(self, request, context):
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, 'driver "process" does not support checkpoint')

    async def Exec(self, request_iterator, context):
        """First message: ExecStart. Headers go out once the process runs;
        then stdout/stderr chunks, then the exit status."""
        proc = None
        try:
            first = await request_iterator.__anext__()
            if first.WhichOneof("message") != "start":
                raise invalid("start", 'the first message of an exec session must be "start"')
            s = first.start
            require_id(s.id)
            if not s.args:
                raise invalid("start.args", "is required")
            for i, e in enumerate(s.env):
                if "=" not in e:
                    raise invalid("start.env[%d]" % i, "must look like KEY=VALUE")
            user = {"uid": s.user.uid, "gid": s.user.gid, "groups": list(s.user.additional_gids)} if s.HasField("user") else None
            cfg = self.store.exec_config(s.id, container_pb2.ContainerSpec, s.args, s.env, s.cwd or "/", user, s.tty)
            session = await ExecSession.start(cfg, s.tty, s.terminal_size.rows, s.terminal_size.cols)
            proc = session.proc
            await context.send_initial_metadata(())
            async for msg in session.run(request_iterator):
                yield msg
        except DriverError as e:
            await context.abort(e.code, e.message)
        except StopAsyncIteration:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "start: the exec session sent no messages")
        finally:
            if proc is not None and proc.returncode is None:
                proc.kill()


class ExecSession:
    """One exec'd process: pipes (or a pty) relayed to and from the stream."""

    def __init__(self, proc, tty, master):
        self.proc = proc
        self.tty = tty
        self.master = master

    @classmethod
    async def start(cls, cfg, tty, rows, cols):
        argv = [containers.PYTHON, "-S", "-E", ENTER, json.dumps(cfg)]
        if tty:
            master, slave = pty.openpty()
            if rows and cols:
                fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
            try:
                proc = await asyncio.create_subprocess_exec(*argv, stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
            finally:
                os.close(slave)
            return cls(proc, True, master)
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, start_new_session=True
        )
        return cls(proc, False, None)

    async def run(self, request_iterator):
        out = asyncio.Queue()
        readers = []
        if self.tty:
            readers.append(asyncio.ensure_future(self._pump_pty(out)))
        else:
            readers.append(asyncio.ensure_future(self._pump(self.proc.stdout, "stdout", out)))
            readers.append(asyncio.ensure_future(self._pump(self.proc.stderr, "stderr", out)))
        feeder = asyncio.ensure_future(self._feed(request_iterator))
        try:
            open_streams = len(readers)
            while open_streams:
                kind, data = await out.get()
                if data is None:
                    open_streams -= 1
                    continue
                yield driver_pb2.ExecResponse(**{kind: data})
            code = await self.proc.wait()
            if code < 0:
                ex = container_pb2.ExecExit(exit_code=128 - code, signal=-code)
            else:
                ex = container_pb2.ExecExit(exit_code=code, signal=0)
            yield driver_pb2.ExecResponse(exit=ex)
        finally:
            feeder.cancel()
            for r in readers:
                r.cancel()
            if self.master is not None:
                try:
                    os.close(self.master)
                except OSError:
                    pass
                self.master = None

    async def _pump(self, stream, kind, out):
        try:
            while True:
                b = await stream.read(65536)
                if not b:
                    break
                await out.put((kind, b))
        finally:
            await out.put((kind, None))

    async def _pump_pty(self, out):
        loop = asyncio.get_running_loop()
        fd = self.master
        os.set_blocking(fd, False)
        ready = asyncio.Event()
        loop.add_reader(fd, ready.set)
        try:
            while True:
                await ready.wait()
                ready.clear()
                try:
                    b = os.read(fd, 65536)
                except BlockingIOError:
                    continue
                except OSError:  # EIO: the last holder of the terminal is gone
                    break
                if not b:
                    break
                await out.put(("stdout", b))
        finally:
            loop.remove_reader(fd)
            await out.put(("stdout", None))

    async def _feed(self, request_iterator):
        try:
            async for m in request_iterator:
                which = m.WhichOneof("message")
                if which == "stdin":
                    await self._write(m.stdin)
                elif which == "resize" and self.tty and self.master is not None:
                    fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", m.resize.rows, m.resize.cols, 0, 0))
                elif which == "close_stdin":
                    self._close_stdin()
            # The client half-closed: no more input.
            self._close_stdin()
        except (asyncio.CancelledError, grpc.aio.AioRpcError):
            pass
        except Exception:  # noqa: BLE001 (a broken client stream ends the input only)
            log.exception("exec input")

    async def _write(self, data):
        if self.tty:
            if self.master is not None:
                os.write(self.master, data)
            return
        if self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.write(data)
            try:
                await self.proc.stdin.drain()
            except (BrokenPipeError, ConnectionResetError):
                pass

    def _close_stdin(self):
        if not self.tty and self.proc.stdin is not None and not self.proc.stdin.is_closing():
            self.proc.stdin.close()


class Health(health_pb2_grpc.HealthServicer):
    """grpc.health.v1: SERVING for "" and the driver service while we serve."""

    def __init__(self):
        self.serving = True
        self.changed = asyncio.Event()

    def _status(self, service):
        if service not in ("", SERVICE):
            return None
        return health_pb2.HealthCheckResponse.SERVING if self.serving else health_pb2.HealthCheckResponse.NOT_SERVING

    async def Check(self, request, context):
        st = self._status(request.service)
        if st is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "unknown service %s" % request.service)
        return health_pb2.HealthCheckResponse(status=st)

    async def Watch(self, request, context):
        while True:
            st = self._status(request.service)
            yield health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVICE_UNKNOWN if st is None else st)
            await self.changed.wait()
            self.changed.clear()

    def stop(self):
        self.serving = False
        self.changed.set()
