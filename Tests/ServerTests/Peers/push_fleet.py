"""A fleet of push-session devices on Python's websockets library, driven by the Swift tests.

Usage:
  push_fleet.py --url URL --proto-root DIR --devices FILE
                [--seed N] [--disconnect-rate R] [--finish-timeout S]

FILE is JSON: a list of {"name": str, "token": str}. Every device runs its own session on
URL (ws://HOST:PORT/v1/push): Hello with a cursor per chat it holds, then it stores the
pushed messages of each chat in sequence order, acknowledges them with PushAck and sends a
Heartbeat whenever it has sent nothing for the announced interval. A session that ends on
its own, or cannot be opened, is reopened with backoff (100 ms doubling to 1 s), forever.
With --disconnect-rate R > 0 each device also drops its session at random times
(exponential, mean 1/R s; half clean closes, half aborted TCP connections) and reconnects
0-300 ms later. The seed is printed to stderr so a failing run can be replayed.

stdout carries exactly two kinds of line:
  ready      once every device has had its first Welcome
  {JSON}     the result, after `finish`; then the process exits 0
stdin takes one command:
  finish {"DEVICE": {"CHAT_ID": LAST_SEQUENCE, ...}, ...}
    stop the random disconnects, keep every session up and wait until every listed device
    holds each listed chat through LAST_SEQUENCE (at most --finish-timeout seconds), then
    close every session cleanly and print the result:
    {"timed_out": bool, "devices": {NAME: {
        "chats": {"CHAT_ID": [[sequence, server_message_id, client_message_id, text], ...]},
        "duplicates": n, "gaps": [[chat_id, expected, got], ...], "sessions": n,
        "receipts": [[chat_id, sequence, server_message_id, client_message_id], ...],
        "errors": ["ERROR_CODE_...: message", "protocol: ...", ...],
        "closes": [[code, reason], ...]}}}
  End of stdin before `finish` exits 2.
Everything else (seed, tracebacks, diagnostics) goes to stderr.
"""
import argparse
import asyncio
import glob
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

CLIENT_NAME = "push_fleet/1.0"
WELCOME_TIMEOUT = 15.0  # seconds from Hello to Welcome before the session is dropped
ACK_MAX_DELAY = 0.05  # a PushAck goes out at least this often while pushes keep coming
BACKOFF_FIRST, BACKOFF_MAX = 0.1, 1.0
CLOSE_TIMEOUT = 5.0

pb = None  # namespace of the generated modules, set by load_protos()


def log(*parts):
    print(*parts, file=sys.stderr, flush=True)


def load_protos(proto_root):
    """Compile courier/v1/*.proto with protoc into a temporary directory and import them."""
    global pb
    out = tempfile.mkdtemp(prefix="push_fleet_pb_")
    protos = sorted(glob.glob(os.path.join(proto_root, "courier", "v1", "*.proto")))
    if not protos:
        raise SystemExit(f"push_fleet: no courier/v1/*.proto under {proto_root}")
    rel = [os.path.relpath(p, proto_root) for p in protos]
    subprocess.run(["protoc", f"--proto_path={proto_root}", f"--python_out={out}", *rel], check=True)
    sys.path.insert(0, out)
    try:
        from courier.v1 import error_pb2, message_pb2, push_pb2, session_pb2  # noqa: E402
    finally:
        sys.path.remove(out)
        shutil.rmtree(out, ignore_errors=True)  # the modules are loaded; leave nothing behind

    class Namespace:
        pass

    pb = Namespace()
    pb.error, pb.message, pb.push, pb.session = error_pb2, message_pb2, push_pb2, session_pb2


def now():
    return time.monotonic()


class Device:
    def __init__(self, fleet, index, name, token):
        self.fleet = fleet
        self.index = index
        self.name = name
        self.token = token
        self.rng = random.Random(fleet.seed * 1_000_003 + index)
        # What the device holds: chat id -> [[sequence, server id, client id, text], ...],
        # always sequences 1, 2, 3, ... without holes.
        self.chats = {}
        self.duplicates = 0
        self.gaps = []
        self.sessions = 0  # sessions that got a Welcome
        self.receipts = []
        self.errors = []
        self.closes = []
        self.welcomed_once = False
        self.targets = {}  # chat id -> last sequence, from `finish`
        # The current session.
        self.ws = None
        self.dropped = False  # this side ended the current session on purpose
        self.pending = {}  # chat id -> cursor to acknowledge
        self.pending_since = None
        self.ack_wanted = None  # asyncio.Event of the current session
        self.last_sent = now()
        self.task = None
        self.disconnect_task = None

    # --- state -------------------------------------------------------------------------

    def held(self, chat_id):
        entries = self.chats.get(chat_id)
        return entries[-1][0] if entries else 0

    def satisfied(self):
        return all(self.held(chat) >= last for chat, last in self.targets.items())

    def result(self):
        return {
            "chats": {str(chat): entries for chat, entries in sorted(self.chats.items())},
            "duplicates": self.duplicates,
            "gaps": self.gaps,
            "sessions": self.sessions,
            "receipts": self.receipts,
            "errors": self.errors,
            "closes": self.closes,
        }

    # --- the session loop ----------------------------------------------------------------

    async def run(self):
        backoff = BACKOFF_FIRST
        while not self.fleet.stopping:
            welcomed = False
            try:
                welcomed = await self.session()
            except asyncio.CancelledError:
                raise
            except (OSError, asyncio.TimeoutError, InvalidHandshake) as failed:
                # Connection refused / reset / timed out, or the upgrade failed: the server is
                # down, restarting or refusing; try again after the backoff.
                if isinstance(failed, InvalidStatus):
                    log(f"push_fleet: {self.name}: upgrade refused with HTTP {failed.response.status_code}")
                elif isinstance(failed, InvalidHandshake):
                    log(f"push_fleet: {self.name}: upgrade failed: {failed!r}")
            except Exception:
                log(f"push_fleet: {self.name}: session failed:")
                traceback.print_exc(file=sys.stderr)
            finally:
                self.ws = None
            if self.fleet.stopping:
                break
            if self.dropped:
                self.dropped = False
                backoff = BACKOFF_FIRST
                delay = self.rng.uniform(0.0, 0.3)
            else:
                if welcomed:
                    backoff = BACKOFF_FIRST
                delay = backoff
                backoff = min(backoff * 2, BACKOFF_MAX)
            await self.fleet.sleep_unless_stopping(delay)

    async def send(self, ws, frame):
        self.last_sent = now()
        await ws.send(frame.SerializeToString())

    async def session(self):
        """One session, from connect to its end. Returns whether it got a Welcome."""
        self.dropped = False
        ws = await connect(
            self.fleet.url,
            open_timeout=10,
            max_size=None,
            close_timeout=CLOSE_TIMEOUT,
            proxy=None,
        )
        self.ws = ws
        self.pending = {}
        self.pending_since = None
        self.ack_wanted = asyncio.Event()
        helpers = []
        welcomed = False
        try:
            if self.fleet.stopping:
                await ws.close()
                return False
            hello = pb.session.ClientFrame()
            hello.hello.token = self.token
            hello.hello.client_name = CLIENT_NAME
            for chat in sorted(self.chats):
                hello.hello.have.add(chat_id=chat, sequence=self.held(chat))
            await self.send(ws, hello)
            welcome_deadline = now() + WELCOME_TIMEOUT
            data = await asyncio.wait_for(ws.recv(), WELCOME_TIMEOUT)
            helpers.append(asyncio.create_task(self.acker(ws)))
            while True:
                frame = self.decode(data)
                if frame is not None:
                    kind = frame.WhichOneof("frame")
                    if kind == "welcome":
                        if welcomed:
                            self.errors.append("protocol: second Welcome in one session")
                        else:
                            welcomed = True
                            self.sessions += 1
                            interval = frame.welcome.heartbeat_interval_ms / 1000.0
                            if interval > 0:
                                helpers.append(asyncio.create_task(self.heartbeater(ws, interval)))
                            if not self.welcomed_once:
                                self.welcomed_once = True
                                self.fleet.welcomed()
                    elif kind == "push":
                        if not welcomed:
                            self.errors.append("protocol: push before Welcome")
                        self.on_push(frame.push)
                    elif kind == "error":
                        error = frame.error
                        try:
                            code = pb.error.ErrorCode.Name(error.code)
                        except ValueError:
                            code = f"ERROR_CODE_{error.code}"
                        self.errors.append(f"{code}: {error.message}")
                    elif kind == "heartbeat":
                        pass
                    else:
                        log(f"push_fleet: {self.name}: ignoring a ServerFrame with {kind}")
                if self.pending and now() - self.pending_since >= ACK_MAX_DELAY:
                    await asyncio.sleep(0)  # let the acker run even if pushes never pause
                if welcomed:
                    data = await ws.recv()
                else:
                    data = await asyncio.wait_for(ws.recv(), max(0.01, welcome_deadline - now()))
        except ConnectionClosed as closed:
            # Record the close frames the server started (not the echo of our own close).
            if closed.rcvd is not None and closed.rcvd_then_sent is not False and not self.dropped:
                self.closes.append([closed.rcvd.code, closed.rcvd.reason])
        except asyncio.TimeoutError:
            log(f"push_fleet: {self.name}: no answer to Hello within {WELCOME_TIMEOUT:.0f} s, reconnecting")
        finally:
            for helper in helpers:
                helper.cancel()
            for helper in helpers:
                try:
                    await helper
                except (asyncio.CancelledError, ConnectionClosed):
                    pass
                except Exception:
                    traceback.print_exc(file=sys.stderr)
            if ws.state.name != "CLOSED":
                if self.fleet.stopping or self.dropped:
                    try:
                        await ws.close()
                    except Exception:
                        ws.transport.abort()
                else:
                    ws.transport.abort()
        return welcomed

    def decode(self, data):
        if isinstance(data, str):
            self.errors.append("protocol: text frame")
            return None
        try:
            return pb.session.ServerFrame.FromString(data)
        except Exception as failed:
            self.errors.append(f"protocol: undecodable ServerFrame ({len(data)} bytes): {failed}")
            return None

    def on_push(self, push):
        kind = push.WhichOneof("kind")
        if kind == "message":
            message = push.message
            chat = message.chat_id
            held = self.held(chat)
            sequence = message.chat_sequence
            if sequence == held + 1:
                self.chats.setdefault(chat, []).append(
                    [sequence, message.server_message_id, message.client_message_id, message.text])
                self.want_ack(chat, sequence)
            elif sequence <= held:
                self.duplicates += 1
                self.want_ack(chat, held)  # harmless, and unblocks a server waiting for it
            else:
                self.gaps.append([chat, held + 1, sequence])
        elif kind == "delivered":
            receipt = push.delivered
            self.receipts.append(
                [receipt.chat_id, receipt.chat_sequence, receipt.server_message_id, receipt.client_message_id])
        else:
            log(f"push_fleet: {self.name}: ignoring a Push with {kind}")

    def want_ack(self, chat, sequence):
        if not self.pending:
            self.pending_since = now()
        if sequence > self.pending.get(chat, 0):
            self.pending[chat] = sequence
        self.ack_wanted.set()

    async def acker(self, ws):
        """Sends one PushAck as soon as the reader has handled the frames at hand."""
        while True:
            await self.ack_wanted.wait()
            self.ack_wanted.clear()
            if not self.pending:
                continue
            cursors, self.pending, self.pending_since = self.pending, {}, None
            frame = pb.session.ClientFrame()
            for chat, sequence in sorted(cursors.items()):
                frame.ack.cursors.add(chat_id=chat, sequence=sequence)
            await self.send(ws, frame)

    async def heartbeater(self, ws, interval):
        while True:
            due = self.last_sent + interval
            if now() >= due:
                frame = pb.session.ClientFrame()
                frame.heartbeat.sent_at_ms = int(time.time() * 1000)
                await self.send(ws, frame)
            else:
                await asyncio.sleep(due - now())

    # --- random disconnects ------------------------------------------------------------

    async def disconnector(self, rate):
        while not self.fleet.finishing:
            if await self.fleet.sleep_unless_finishing(self.rng.expovariate(rate)):
                return
            ws = self.ws
            if ws is None or self.dropped or ws.state.name != "OPEN":
                continue
            self.dropped = True
            if self.rng.random() < 0.5:
                closing = asyncio.create_task(self.close_quietly(ws))
                self.fleet.background.add(closing)
                closing.add_done_callback(self.fleet.background.discard)
            else:
                ws.transport.abort()

    async def close_quietly(self, ws):
        try:
            await ws.close()
        except Exception:
            ws.transport.abort()


class Fleet:
    def __init__(self, args, devices):
        self.url = args.url
        self.seed = args.seed
        self.rate = args.disconnect_rate
        self.finish_timeout = args.finish_timeout
        self.devices = [Device(self, i, d["name"], d["token"]) for i, d in enumerate(devices)]
        self.finishing = False
        self.stopping = False
        self.finish_event = asyncio.Event()
        self.stop_event = asyncio.Event()
        self.background = set()  # tasks to keep referenced until they end
        self.unwelcomed = len(self.devices)
        if self.unwelcomed == 0:
            self.announce_ready()

    def welcomed(self):
        self.unwelcomed -= 1
        if self.unwelcomed == 0:
            self.announce_ready()

    @staticmethod
    def announce_ready():
        print("ready", flush=True)

    async def sleep_unless_stopping(self, seconds):
        try:
            await asyncio.wait_for(self.stop_event.wait(), seconds)
        except asyncio.TimeoutError:
            pass

    async def sleep_unless_finishing(self, seconds):
        """Returns True when finishing began during the sleep."""
        try:
            await asyncio.wait_for(self.finish_event.wait(), seconds)
            return True
        except asyncio.TimeoutError:
            return False

    def start(self):
        for device in self.devices:
            device.task = asyncio.create_task(guard(device.name, device.run()))
            if self.rate > 0:
                device.disconnect_task = asyncio.create_task(
                    guard(device.name, device.disconnector(self.rate)))

    async def finish(self, targets):
        self.finishing = True
        self.finish_event.set()
        by_name = {device.name: device for device in self.devices}
        for name, chats in targets.items():
            if name not in by_name:
                log(f"push_fleet: finish names an unknown device {name!r}; ignored")
                continue
            by_name[name].targets = {int(chat): int(last) for chat, last in chats.items()}
        deadline = now() + self.finish_timeout
        while not all(device.satisfied() for device in self.devices) and now() < deadline:
            await asyncio.sleep(0.02)
        timed_out = not all(device.satisfied() for device in self.devices)
        if timed_out:
            for device in self.devices:
                missing = {chat: [device.held(chat), last]
                           for chat, last in device.targets.items() if device.held(chat) < last}
                if missing:
                    log(f"push_fleet: {device.name} still misses (held, wanted): {missing}")
        await self.stop()
        return {"timed_out": timed_out, "devices": {d.name: d.result() for d in self.devices}}

    async def stop(self):
        self.finishing = True
        self.finish_event.set()
        self.stopping = True
        self.stop_event.set()
        tasks = [d.task for d in self.devices if d.task] + [d.disconnect_task for d in self.devices if d.disconnect_task]
        closing = [asyncio.create_task(d.close_quietly(d.ws)) for d in self.devices if d.ws is not None]
        done, pending = await asyncio.wait(tasks + closing, timeout=CLOSE_TIMEOUT + 5)
        for task in pending:
            task.cancel()
        if pending:
            log(f"push_fleet: {len(pending)} tasks did not end in time; cancelled")
            await asyncio.wait(pending, timeout=2)


async def guard(name, coroutine):
    """Keeps one device's failure from touching the others."""
    try:
        await coroutine
    except asyncio.CancelledError:
        raise
    except Exception:
        log(f"push_fleet: {name}: task failed:")
        traceback.print_exc(file=sys.stderr)


def start_stdin_reader(loop, queue):
    """Feeds stdin lines (None at EOF) into an asyncio queue from a daemon thread, reading the
    raw descriptor so that no Python file lock is held at exit."""

    def read():
        buffer = b""
        while True:
            try:
                chunk = os.read(0, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                if buffer.strip():
                    loop.call_soon_threadsafe(queue.put_nowait, buffer.decode("utf-8", "replace"))
                loop.call_soon_threadsafe(queue.put_nowait, None)
                return
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                loop.call_soon_threadsafe(queue.put_nowait, line.decode("utf-8", "replace"))

    threading.Thread(target=read, name="stdin", daemon=True).start()


async def main(args, devices):
    fleet = Fleet(args, devices)
    lines = asyncio.Queue()
    start_stdin_reader(asyncio.get_running_loop(), lines)
    fleet.start()
    while True:
        line = await lines.get()
        if line is None:
            log("push_fleet: end of stdin without finish")
            await fleet.stop()
            return 2
        line = line.strip()
        if not line:
            continue
        command, _, rest = line.partition(" ")
        if command != "finish":
            log(f"push_fleet: unknown command {line[:80]!r}; ignored")
            continue
        try:
            targets = json.loads(rest) if rest.strip() else {}
            if not isinstance(targets, dict):
                raise ValueError("not an object")
        except ValueError as bad:
            log(f"push_fleet: bad finish JSON ({bad}); ignored")
            continue
        result = await fleet.finish(targets)
        line = json.dumps(result, separators=(",", ":"), ensure_ascii=False) + "\n"
        sys.stdout.flush()
        sys.stdout.buffer.write(line.encode("utf-8"))  # UTF-8 whatever the locale
        sys.stdout.buffer.flush()
        return 0


def parse_args():
    parser = argparse.ArgumentParser(description="A fleet of Courier push-session devices.")
    parser.add_argument("--url", required=True, help="ws://HOST:PORT/v1/push")
    parser.add_argument("--proto-root", required=True, help="directory holding courier/v1/*.proto")
    parser.add_argument("--devices", required=True, help='JSON file: [{"name": ..., "token": ...}, ...]')
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: chosen and printed)")
    parser.add_argument("--disconnect-rate", type=float, default=0.0,
                        help="random session drops per second per device (0: never)")
    parser.add_argument("--finish-timeout", type=float, default=60.0,
                        help="seconds to wait for the finish targets")
    args = parser.parse_args()
    if args.seed is None:
        args.seed = int.from_bytes(os.urandom(4), "big")
    if args.disconnect_rate < 0:
        parser.error("--disconnect-rate must be >= 0")
    return args


def entry():
    args = parse_args()
    log(f"push_fleet: seed {args.seed} (replay with --seed {args.seed})")
    load_protos(args.proto_root)
    with open(args.devices) as f:
        devices = json.load(f)
    names = [d["name"] for d in devices]
    if len(set(names)) != len(names):
        raise SystemExit("push_fleet: device names must be unique")
    try:
        code = asyncio.run(main(args, devices))
    except KeyboardInterrupt:
        code = 130
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # the stdin thread may still be blocked in read()


if __name__ == "__main__":
    entry()
