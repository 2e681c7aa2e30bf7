"""The eval view as plain values for a checkpoint, and back: how ``rsmatch-detect`` sees images as the run did.

Plugin-only (the USB export does not carry it): :mod:`.plugin` saves the
view beside the detector, :mod:`rsmatch_usb.detect` rebuilds it.
"""
from typing import Any, Dict, Optional

from torchvision import transforms


def view_settings(transform: Any) -> Optional[Dict[str, Any]]:
    """The deterministic eval ``transform`` (USB's: resize, optional centre crop, to tensor, normalise) as plain values.

    ``{"resize", "interpolation", "crop", "mean", "std"}`` (lists, strings,
    None): what a checkpoint keeps so that a tool scoring new images with the
    detector sees them as the run did (:func:`build_view` rebuilds it). None
    when the transform does anything else.
    """
    steps = getattr(transform, "transforms", [transform])
    found = {"resize": None, "interpolation": None, "crop": None, "mean": None, "std": None}
    for step in steps:
        if isinstance(step, transforms.Resize) and found["resize"] is None and step.max_size is None:
            size = step.size
            found["resize"] = [int(size)] if isinstance(size, int) else [int(s) for s in size]
            found["interpolation"] = step.interpolation.value
        elif isinstance(step, transforms.CenterCrop) and found["crop"] is None:
            found["crop"] = [int(s) for s in step.size]
        elif isinstance(step, transforms.Normalize) and found["mean"] is None:
            found["mean"], found["std"] = [float(m) for m in step.mean], [float(s) for s in step.std]
        elif not isinstance(step, transforms.ToTensor):
            return None
    return found if found["resize"] is not None and found["mean"] is not None else None


def build_view(settings: Dict[str, Any]) -> transforms.Compose:
    """The eval transform :func:`view_settings` described: PIL image -> normalised tensor."""
    resize = settings["resize"][0] if len(settings["resize"]) == 1 else tuple(settings["resize"])
    steps = [transforms.Resize(resize, interpolation=transforms.InterpolationMode(settings["interpolation"]))]
    if settings["crop"] is not None:
        steps.append(transforms.CenterCrop(tuple(settings["crop"])))
    return transforms.Compose(steps + [transforms.ToTensor(), transforms.Normalize(settings["mean"], settings["std"])])
