"""Keeping TensorFlow's (and TFLite's) C++ start-up log lines out of the user's terminal.

TensorFlow's native code writes lines such as "WARNING: All log messages before absl::InitializeLog()
is called are written to STDERR" and "I0000 ... cudart_stub.cc:31] Could not find cuda drivers" to
file descriptor 2 before its own log settings apply, so ``TF_CPP_MIN_LOG_LEVEL`` cannot silence
them. `native_logs_filtered()` routes descriptor 2 through a pipe for the duration of a block and
forwards everything except those lines; they go to this module's logger at DEBUG (``-v`` shows them).
Python's own writes to stderr pass through unchanged.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading

logger = logging.getLogger(__name__)

# absl/glog lines from C++ sources (severity I, W or E; fatal F lines are kept), absl's notice that
# it has not been initialised yet, and TFLite's note on each interpreter it starts.
_NATIVE_LINE = re.compile(rb"^(?:[IWE]\d{4} [\d:.]+\s+\d+ [\w./-]+\.(?:cc|h|cpp):\d+\] "
                          rb"|WARNING: All log messages before absl::InitializeLog\(\) is called"
                          rb"|INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.)")


def is_native_log_line(line: bytes) -> bool:
    return bool(_NATIVE_LINE.match(line))


@contextlib.contextmanager
def native_logs_filtered():
    """Within the block, drop TensorFlow's native log lines from file descriptor 2."""
    try:
        sys.stderr.flush()
        original = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real descriptor 2 (embedded interpreters)
        yield
        return
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    # The pipe ends when every process holding it has closed it, and child processes started in the
    # block hold it too (multiprocessing's fork server and resource tracker live as long as this
    # process). So the block ends at a marker, this process's last write into the pipe: once the pump
    # has read it, it has forwarded everything written before it.
    marker, forwarded = b"\0end of block " + os.urandom(8).hex().encode() + b"\0", threading.Event()
    pump = threading.Thread(target=_forward, args=(read_end, original, marker, forwarded), name="native-log-filter",
                            daemon=True)
    pump.start()
    try:
        yield
    finally:
        try:
            sys.stderr.flush()
            os.write(2, marker)
        except (OSError, ValueError):
            pass
        os.dup2(original, 2)  # closes our write end of the pipe: the end, unless a child process holds it
        # The pump owns `original` from here: it forwards what children still write, then closes it.
        forwarded.wait(timeout=5)


def _forward(read_end: int, destination: int, marker: bytes, forwarded: threading.Event) -> None:
    pending = b""
    with os.fdopen(read_end, "rb", buffering=0) as source:
        while True:
            chunk = source.read(65536)
            if not chunk:
                break
            pending += chunk
            at_marker = marker in pending
            pending = pending.replace(marker, b"")
            # Forward whole lines, and "\r"-terminated progress updates, as soon as they are complete.
            parts = re.split(rb"(?<=[\n\r])", pending)
            pending = parts.pop()
            if at_marker:  # the block's last, unfinished line too
                parts.append(pending)
                pending = b""
            for part in parts:
                _emit(part, destination)
            if at_marker:
                forwarded.set()
    if pending:
        _emit(pending, destination)
    forwarded.set()
    os.close(destination)  # the end of the pipe comes after the block's end: nothing writes to it any more


def _emit(part: bytes, destination: int) -> None:
    if is_native_log_line(part):
        logger.debug("TensorFlow: %s", part.decode("utf-8", "replace").rstrip())
        return
    try:
        while part:
            part = part[os.write(destination, part):]
    except OSError:  # the terminal went away: nothing left to tell
        pass
