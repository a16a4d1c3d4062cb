"""Allocates memory step by step (touching every page, so RSS grows), then holds it.

usage: alloc.py STEP_MB STEPS INTERVAL_S
"""

import sys
import time

step_mb, steps, interval = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
held = []
for i in range(steps):
    held.append(b"\x01" * (step_mb << 20))  # written bytes: resident, unlike a calloc'd buffer
    print(f"allocated {(i + 1) * step_mb} MB", flush=True)
    time.sleep(interval)
time.sleep(600)
