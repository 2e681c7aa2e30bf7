"""The tests' stand-in for USB's train.py (written for them, not USB's file): its semilearn calls, in its order.

It knows nothing of rsmatch-usb, as USB's script does not. ``get_config``
parses USB's flags, calls semilearn's ``over_write_args_from_file`` after each
parse and adds the algorithm's ``get_argument()`` from ``name2alg``; the run
picks its logging process by ``rank % torch.cuda.device_count()`` and, with
``multiprocessing_distributed``, starts one process per device with
``torch.multiprocessing.spawn``; each builds the net with semilearn's
``get_net_builder``, the algorithm with ``get_algorithm``, places both models
with ``send_model_cuda`` and trains. Tests copy it to a
folder as ``train.py`` and run it with ``rsmatch-usb-train``.
"""
import argparse
import logging
import os
import random

import numpy as np
import semilearn
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from semilearn.algorithms import get_algorithm, name2alg
from semilearn.algorithms.utils import str2bool
from semilearn.core.utils import get_logger, get_net_builder, over_write_args_from_file, send_model_cuda

TYPED = (("save_dir", str, "./saved_models"), ("save_name", str, "fixmatch"), ("load_path", str, None),
         ("epoch", int, 1), ("num_train_iter", int, 20), ("num_warmup_iter", int, 0), ("num_eval_iter", int, 10),
         ("num_log_iter", int, 5), ("num_labels", int, 400), ("batch_size", int, 8), ("uratio", int, 1),
         ("eval_batch_size", int, 16), ("ema_m", float, 0.999), ("ulb_loss_ratio", float, 1.0),
         ("optim", str, "SGD"), ("lr", float, 3e-2), ("momentum", float, 0.9), ("weight_decay", float, 5e-4),
         ("layer_decay", float, 1.0), ("net", str, "wrn_28_2"), ("pretrain_path", str, ""),
         ("algorithm", str, "fixmatch"), ("clip_grad", float, 0), ("imb_algorithm", str, None),
         ("data_dir", str, "./data"), ("dataset", str, "cifar10"), ("num_classes", int, 10),
         ("train_sampler", str, "RandomSampler"), ("num_workers", int, 1), ("lb_imb_ratio", int, 1),
         ("ulb_imb_ratio", int, 1), ("ulb_num_labels", int, None), ("img_size", int, 32),
         ("crop_ratio", float, 0.875), ("max_length", int, 512), ("max_length_seconds", float, 4.0),
         ("sample_rate", int, 16000), ("world-size", int, 1), ("rank", int, 0),
         ("dist-url", str, "tcp://127.0.0.1:11111"), ("dist-backend", str, "nccl"), ("seed", int, 1),
         ("gpu", int, None), ("c", str, ""))
SWITCHES = (("resume", False), ("overwrite", True), ("use_tensorboard", False), ("use_wandb", False),
            ("use_aim", False), ("net_from_name", False), ("use_pretrain", False), ("use_cat", True),
            ("amp", False), ("include_lb_to_ulb", True), ("multiprocessing-distributed", False))


def get_config():
    parser = argparse.ArgumentParser(description="stand-in for USB's train.py")
    for name, kind, default in TYPED:
        parser.add_argument(f"--{name}", type=kind, default=default)
    for name, default in SWITCHES:
        parser.add_argument(f"--{name}", type=str2bool, default=default)
    args = parser.parse_args()
    over_write_args_from_file(args, args.c)
    for argument in name2alg[args.algorithm].get_argument():
        parser.add_argument(argument.name, type=argument.type, default=argument.default, help=argument.help)
    args = parser.parse_args()
    over_write_args_from_file(args, args.c)
    return args


def main_worker(gpu, ngpus_per_node, args):
    args.gpu = gpu
    if args.distributed:
        args.rank = args.rank * ngpus_per_node + gpu
        dist.init_process_group(backend=args.dist_backend, init_method=args.dist_url, world_size=args.world_size,
                                rank=args.rank)
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    save_path = os.path.join(args.save_dir, args.save_name)
    logger = get_logger(args.save_name, save_path, "INFO" if args.rank % ngpus_per_node == 0 else "WARNING")
    algorithm = get_algorithm(args, get_net_builder(args.net, args.net_from_name), None, logger)
    algorithm.model = send_model_cuda(args, algorithm.model)
    algorithm.ema_model = send_model_cuda(args, algorithm.ema_model, clip_batch=False)
    logger.info(f"Arguments: {algorithm.args}")
    logger.info(f"semilearn imported from {os.path.dirname(semilearn.__file__)}")
    algorithm.train()
    logging.warning(f"GPU {args.rank} training is FINISHED")


if __name__ == "__main__":
    config = get_config()
    config.distributed = config.world_size > 1 or config.multiprocessing_distributed
    ngpus = torch.cuda.device_count()
    if config.multiprocessing_distributed:
        config.world_size *= ngpus
        config.dist_url = f"tcp://127.0.0.1:{29500 + os.getpid() % 1000}"
        mp.spawn(main_worker, nprocs=ngpus, args=(ngpus, config))
    else:
        main_worker(config.gpu, ngpus, config)
