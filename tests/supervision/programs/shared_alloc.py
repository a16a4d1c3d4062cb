"""Allocates memory, then forks children that share it copy-on-write (RSS counts it per process,
PSS once), and holds.

usage: shared_alloc.py MB CHILDREN
"""

import os
import sys
import time

mb, children = int(sys.argv[1]), int(sys.argv[2])
held = b"\x01" * (mb << 20)  # written bytes: resident
for _ in range(children):
    if os.fork() == 0:
        time.sleep(600)
        os._exit(0)
print(f"holding {mb} MB shared by {children + 1} processes", flush=True)
time.sleep(600)
