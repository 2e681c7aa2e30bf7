"""Benchmark: index a folder of 100,000 small PNGs as a synthetic source.

Writes the images to a temporary folder (``<tmp>/<class>/<i>.png``), then
times :func:`data_tools.synthetic.read_synthetic_source` on it and reports the
resident memory it added. Targets: under 30 s and under 200 MB. Optionally
times PIL's ``verify()`` on a sample, the per-image check mixing does on the
synthetic images it draws.

    python benchmark_configs/bench_index.py [--images 100000] [--classes 10] [--verify 10000]
"""
import argparse
import io
import os
import resource
import shutil
import sys
import tempfile
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data_tools.mixing import verify_images  # noqa: E402
from data_tools.synthetic import read_synthetic_source  # noqa: E402


def rss_mb():
    """Resident memory of this process in MB (psutil, else /proc/self/status)."""
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


def write_images(root, images, classes, size):
    """``images`` PNGs spread over ``classes`` folders; a few encoded variants, written as bytes (fast)."""
    rng = np.random.default_rng(0)
    variants = []
    for _ in range(16):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
        variants.append(buf.getvalue())
    for c in range(classes):
        os.makedirs(os.path.join(root, f"class_{c}"), exist_ok=True)
    for i in range(images):
        c = i % classes
        with open(os.path.join(root, f"class_{c}", f"{c}_{i}.png"), "wb") as f:
            f.write(variants[i % len(variants)])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=100_000)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--size", type=int, default=16, help="image side in pixels")
    p.add_argument("--verify", type=int, default=10_000, help="images to verify with PIL afterwards (0: skip)")
    p.add_argument("--dir", default=None, help="where to write the images (default: a temporary folder)")
    args = p.parse_args(argv)

    root = args.dir or tempfile.mkdtemp(prefix="bench_index_")
    try:
        t = time.perf_counter()
        write_images(root, args.images, args.classes, args.size)
        print(f"wrote {args.images} PNGs ({args.size}x{args.size}) in {args.classes} class folders under {root} "
              f"in {time.perf_counter() - t:.1f} s")
        class_names = [f"class_{c}" for c in range(args.classes)]
        before, peak_before = rss_mb(), peak_rss_mb()
        t = time.perf_counter()
        source = read_synthetic_source(root, "bench", class_names)
        seconds = time.perf_counter() - t
        extra = rss_mb() - before
        peak = max(0.0, peak_rss_mb() - max(peak_before, before))
        assert len(source) == args.images
        print(f"index time: {seconds:.2f} s (target < 30 s)")
        print(f"resident memory increase: {extra:.1f} MB held after indexing, peak above baseline "
              f"{peak:.1f} MB (target < 200 MB)")
        if args.verify:
            sample = source.subset(np.arange(0, len(source), max(1, len(source) // args.verify))[:args.verify])
            t = time.perf_counter()
            verify_images(sample)
            print(f"verify: {len(sample)} images in {time.perf_counter() - t:.2f} s")
        ok = seconds < 30 and extra < 200
        print("PASS" if ok else "FAIL")
        return 0 if ok else 1
    finally:
        if not args.dir:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
