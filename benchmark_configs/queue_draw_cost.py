"""Training-thread cost of RSMatch's queue draw: read on the training thread vs prefetched by a worker.

    python benchmark_configs/queue_draw_cost.py --img-size 32 224 --draws 20 --step-ms 300

For each image size, ``--draws`` draws of ``--batch`` random unlabeled images
(the embedded digits set by default, under its weak transform) are made two
ways: synchronously (``queue_workers: 0``, what every RSMatch step did before)
and through the plugin's :class:`WorkerDraws` with one worker, which reads the next draw
while a training step of ``--step-ms`` (simulated by sleeping) runs. Printed:
the median milliseconds the training thread spends per draw in each case.
"""
import argparse
import os
import statistics
import sys
import time

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmark_configs.overhead import DEFAULT_CONFIG  # noqa: E402  (the config the overhead is measured on)


def unlabeled_dataset(config, img_size):
    from data_tools import usb as usb_data
    from rsmatch_usb.config import get_config
    from rsmatch_usb.train import prepare

    args = prepare(get_config(["--c", config, "--img_size", str(img_size), "--algorithm", "rsmatch"]))
    return usb_data.get_dataset(args, "rsmatch", args.dataset, args.num_labels, args.num_classes,
                                args.data_dir)["train_ulb"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=DEFAULT_CONFIG)
    p.add_argument("--img-size", type=int, nargs="+", default=[32, 224])
    p.add_argument("--batch", type=int, default=16, help="images per draw (RSMatch: batch_size)")
    p.add_argument("--draws", type=int, default=20)
    p.add_argument("--step-ms", type=float, default=300.0, help="simulated training step between draws")
    args = p.parse_args(argv)

    import torch

    from rsmatch_usb.algorithms.rsmatch.draw_workers import WorkerDraws
    from rsmatch_usb.algorithms.utils import read_transformed

    for size in args.img_size:
        ulb = unlabeled_dataset(args.config, size)
        g = torch.Generator().manual_seed(0)
        requests = [(torch.randint(len(ulb), (args.batch,), generator=g), i) for i in range(args.draws + 1)]
        sync = []
        for index, seed in requests[1:]:
            start = time.perf_counter()
            read_transformed(ulb, index, seed)
            sync.append(time.perf_counter() - start)
        draws, ahead = WorkerDraws(ulb, 1), []
        try:
            draws.request(*requests[0])
            draws.take()  # the worker's start-up is paid once, at the first trusted step
            draws.request(*requests[1])
            for index, seed in requests[2:] + [(None, None)]:
                time.sleep(args.step_ms / 1000)  # the training step the worker overlaps with
                start = time.perf_counter()
                draws.take()
                if index is not None:
                    draws.request(index, seed)
                ahead.append(time.perf_counter() - start)
        finally:
            draws.close()
        print(f"{size}px, {args.batch} images per draw, {args.draws} draws: on the training thread "
              f"{1000 * statistics.median(sync):.1f} ms synchronous, {1000 * statistics.median(ahead):.1f} ms "
              f"prefetched (step {args.step_ms:.0f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
