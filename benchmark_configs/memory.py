"""Activation memory of a USB net per training image: what the generator's GPU-memory estimate scales.

    python -m benchmark_configs.memory wrn_28_2:32:10 resnet50:224:100   # NET:IMG_SIZE[:CLASSES]

A training step keeps, for the backward pass, every tensor autograd saves in
the forward pass. This module counts them: one forward pass of a small batch
in training mode under ``torch.autograd.graph.saved_tensors_hooks``, summing
the distinct storages saved (the parameters left out: they are counted
once, not per image), divided by the batch. That is the activation memory
per image in fp32; the generator (``generate.py``) multiplies it by the
images a step forwards with gradient. The generator keeps a committed table
of these figures so that it runs without torch; ``tests/test_gpu_readiness.py``
re-measures the small nets with this module.
"""
import argparse
import sys


def measure(net, img_size, num_classes=10, batch=2):
    """``(activation bytes per image, parameter count)`` of USB net ``net`` at ``img_size``.

    The bytes are what autograd saves for one training forward pass, per image.
    """
    import torch

    import rsmatch_usb  # noqa: F401  (the plugin's nets)
    from rsmatch_usb.nets import get_net_builder

    torch.manual_seed(0)
    model = get_net_builder(net, False)(num_classes=num_classes)
    model.train()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    x = torch.randn(batch, 3, img_size, img_size)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x)
    del out
    return sum(saved.values()) // batch, sum(p.numel() for p in model.parameters())


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmark_configs.memory",
                                description="Activation memory per training image of USB nets (fp32).")
    p.add_argument("nets", nargs="+", metavar="NET:IMG_SIZE[:CLASSES]", help="e.g. wrn_28_2:32 resnet50:224:100")
    args = p.parse_args(argv)
    for item in args.nets:
        parts = item.split(":")
        if len(parts) not in (2, 3) or not all(x.isdigit() for x in parts[1:]):
            p.error(f"{item!r}: use NET:IMG_SIZE[:CLASSES], e.g. wrn_28_2:32")
        key = (parts[0], *map(int, parts[1:]))
        value, params = measure(*key)
        print(f"{key!r}: ({value}, {params}),  # {value / 2 ** 20:.2f} MiB per image, {params:,} parameters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
