"""RSMatch's keys, each with its type, default and help: the one source of both (standard library only)."""
import dataclasses
from dataclasses import dataclass, field
from typing import Any


def _setting(default: Any, help_text: str) -> Any:
    return field(default=default, metadata={"help": help_text})


@dataclass(frozen=True)
class RSMatchConfig:
    """Every key RSMatch adds to FixMatch's, with its default (the paper gives none; ours)."""

    # ablation switches
    use_detector: bool = _setting(True, "False: every unlabeled sample is real (the base)")
    use_dummy_head: bool = _setting(True, "False: samples judged synthetic are discarded (the filter baseline)")
    use_queue: bool = _setting(True, "False: the detector trains on labeled vs unlabeled (PU) throughout")
    # losses and routing
    lambda_syn: float = _setting(1.0, "weight of the dummy head's unlabeled loss")
    detector_threshold: float = _setting(
        0.5, "score at or above which a sample is synthetic (raised by the calibration images' scores)")
    detector_calib_per_class: int = _setting(
        1, "labeled images per class held out of the detector's training to calibrate its threshold")
    detector_calib_quantile: float = _setting(
        1.0, "the floor is this quantile of the held-out images' scores (1: their maximum)")
    # detector
    detector_width: int = _setting(16, "detector widths are w, 2w, 4w")
    detector_input: str = _setting("rgb+npr", "what the detector sees: rgb (the image), npr (its neighbouring-pixel "
                                              "residual), or several joined by '+' (rgb+npr)")
    detector_lr: float = _setting(3e-3, "detector Adam learning rate")
    detector_wd: float = _setting(5e-3, "detector Adam weight decay (keeps it from memorizing the few labeled "
                                        "images)")
    detector_ema_m: float = _setting(0.99, "EMA momentum of the scoring copy of the detector (0: the detector "
                                           "itself)")
    detector_ema_warmup: bool = _setting(
        True, "EMA momentum min(detector_ema_m, 1 - 1/(t+1)) at detector step t: early scores follow the detector")
    detector_ulb_real: int = _setting(
        0, "the detector also trains on this many lowest-scoring unlabeled samples (of those judged real) as real")
    pu_mass: float = _setting(
        1 / 3, "bootstrap mass of the unlabeled ('possibly synthetic') side relative to the labeled side")
    pu_pos_weight: float = _setting(
        0.0, "bootstrap weight of each unlabeled sample, overriding pu_mass; 0: pu_mass * num_lb / num_ulb")
    # CSQueue
    queue_size: int = _setting(128, "K: capacity of each class sub-queue")
    queue_push_classes: int = _setting(5, "P: classes served per step")
    queue_push_per_class: int = _setting(4, "Q: top-scoring images pushed per served class")
    queue_min_score: float = _setting(0.5, "only samples scoring at least this are pushed")
    queue_min_fill: int = _setting(
        16, "bootstrap ends once queue_gate_share of the sub-queues hold this many images (at most queue_size)")
    queue_gate_share: float = _setting(
        1.0, "share of the class sub-queues that must hold queue_min_fill images to end the bootstrap")

    @classmethod
    def from_args(cls, args: Any) -> "RSMatchConfig":
        """The settings of a run's ``args`` (USB's argparse namespace)."""
        return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})
