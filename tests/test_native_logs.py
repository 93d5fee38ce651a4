"""`native_logs_filtered`: TensorFlow's native log lines are dropped from descriptor 2, everything
else this process writes there comes through, and the block ends when this process's writing does,
even where a child process started in it (multiprocessing's fork server, a verify engine) still
holds the pipe."""

import subprocess
import sys

CODE = """
import os, subprocess, sys, time
from onnx_mobilenets.conversion.native_logs import native_logs_filtered

descriptors = sorted(os.listdir("/proc/self/fd"))
with native_logs_filtered():
    os.write(2, b"")
for _ in range(200):  # the filter's descriptors close as it ends
    if sorted(os.listdir("/proc/self/fd")) == descriptors:
        break
    time.sleep(0.01)
print(sorted(os.listdir("/proc/self/fd")) == descriptors)

with native_logs_filtered():
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # inherits descriptor 2
    os.write(2, b"I0000 00:00:1796646898.326239   28005 cudart_stub.cc:31] Could not find cuda drivers\\n")
    os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\\n")
    os.write(2, b"a line of ours\\n")
    print("and Python's own", file=sys.stderr, flush=True)
    os.write(2, b"an unfinished one")
    ended = time.monotonic()
print(f"{time.monotonic() - ended:.3f}", holder.poll())
os.write(2, b" -- after the block\\n")
holder.kill()
"""


def test_native_lines_are_dropped_the_rest_kept_and_the_block_ends_with_its_own_writing():
    done = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "a line of ours\nand Python's own\nan unfinished one -- after the block\n", done.stderr
    closed, seconds, holder_status = done.stdout.split()
    assert closed == "True"  # a block leaves no descriptor open
    assert holder_status == "None"  # the child still held the pipe when the block ended...
    assert float(seconds) < 2.5  # ...and the block did not wait for it (it gave up after 5 s before)
