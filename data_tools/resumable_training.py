"""Seeded minibatch order and checkpoints that let a killed CPU training run continue.

Generator training in the synthetic-set scripts takes tens of minutes on a
shared CPU; :class:`ResumableBatches` draws the shuffled minibatches from one
seeded ``torch.Generator`` and saves, every few steps, that generator, the
data order and the state of every model/optimizer passed in, so a rerun with
the same arguments continues bit-identically where the last one stopped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Optional

import torch
from tqdm.auto import tqdm

from .atomic import torch_save


class LossLog:
    """Mean training loss of each ``every``-step window, kept in the checkpoint.

    The history shows whether a generator's loss has plateaued; it is saved with
    the training state so a resumed run keeps the windows of the runs before it.
    """

    def __init__(self, every: int = 250):
        self.every, self.history, self._sum, self._count = every, [], 0.0, 0
        self.steps = 0  # steps trained so far, over every resumed run

    def add(self, loss: float) -> None:
        self.steps += 1
        self._sum += loss
        self._count += 1
        if self._count == self.every:
            self.history.append(self._sum / self._count)
            self._sum, self._count = 0.0, 0

    def state_dict(self) -> dict:
        return {"every": self.every, "history": list(self.history), "sum": self._sum, "count": self._count,
                "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.every, self.history = state["every"], list(state["history"])
        self._sum, self._count = state["sum"], state["count"]
        # Checkpoints written before the count was kept: every window is full but the open one.
        self.steps = state.get("steps", self.every * len(self.history) + self._count)


class ResumableBatches:
    """Epoch-shuffled minibatch indices over ``n`` items; ``gen`` is the run's only random source.

    ``stateful`` maps checkpoint keys to objects with ``state_dict``/``load_state_dict``
    (models, optimizers, LR schedulers, EMA); they are restored from ``checkpoint``
    when it exists and saved to it every ``checkpoint_every`` steps and at the end.
    """

    def __init__(self, n: int, batch_size: int, seed: int, train_steps: int, stateful: dict,
                 checkpoint: Path | None = None, checkpoint_every: int = 250):
        self.n, self.batch_size, self.train_steps = n, batch_size, train_steps
        self.stateful, self.checkpoint, self.checkpoint_every = stateful, checkpoint, checkpoint_every
        self.gen = torch.Generator().manual_seed(seed)
        self.order, self.pos, self.done = torch.randperm(n, generator=self.gen), 0, 0
        if checkpoint is not None and checkpoint.exists():
            # weights_only: a planted file in a work folder must not run code on load.
            state = torch.load(checkpoint, weights_only=True)
            for key, obj in stateful.items():
                obj.load_state_dict(state[key])
            self.gen.set_state(state["gen"])
            self.order, self.pos, self.done = state["order"], state["pos"], state["step"]
        self.bar = None

    def batches(self, desc: str, stop: Optional[int] = None) -> Iterator[torch.Tensor]:
        """Yield the minibatch index tensor of each remaining step (progress bar in ``self.bar``).

        ``stop`` ends the loop after that step (checkpointed there) without
        changing the schedule of ``train_steps``: a later run without it
        continues to the end.
        """
        end = self.train_steps if stop is None else min(stop, self.train_steps)
        self.bar = tqdm(range(self.done, end), desc=desc, mininterval=10.0, initial=self.done, total=end)
        for step in self.bar:
            if self.pos + self.batch_size > self.n:  # new epoch
                self.order, self.pos = torch.randperm(self.n, generator=self.gen), 0
            idx = self.order[self.pos:self.pos + self.batch_size]
            self.pos += self.batch_size
            yield idx
            # The caller's step has finished when the loop asks for the next batch.
            if self.checkpoint is not None and (
                    (step + 1) % self.checkpoint_every == 0 or step + 1 == end):
                torch_save({**{k: obj.state_dict() for k, obj in self.stateful.items()},
                             "gen": self.gen.get_state(), "order": self.order, "pos": self.pos,
                             "step": step + 1}, self.checkpoint)
