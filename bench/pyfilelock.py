"""Times Python's filelock (Debian python3-filelock): N lock+release in one
process on one lock file, COUNT times, printed as Go benchmark lines so that
report.sh reads them beside the Go benchmarks.

Usage: /usr/bin/python3 -I bench/pyfilelock.py N COUNT
"""
import os
import sys
import tempfile
import time

import filelock


def main():
    n, count = int(sys.argv[1]), int(sys.argv[2])
    with tempfile.TemporaryDirectory() as d:
        lock = filelock.FileLock(os.path.join(d, "bench.lock"))
        for _ in range(count):
            start = time.perf_counter_ns()
            for _ in range(n):
                lock.acquire()
                lock.release()
            ns = (time.perf_counter_ns() - start) / n
            print(f"BenchmarkUncontended_PyFilelock\t{n:8d}\t{ns:12.0f} ns/op")


if __name__ == "__main__":
    main()
