"""The class-wise synthetic queue (CSQueue) of RSMatch.

The queue holds the unlabeled images the detector is most sure are synthetic,
one FIFO sub-queue per pseudo-class, and serves them as the detector's
synthetic training examples. It stores dataset indices, not pixels: memory is
a (C, K) int64 tensor whatever the image size, and the images are re-read (and
re-augmented) when drawn.

Plain PyTorch; usable without semilearn. Under DDP, :meth:`CSQueue.update`
gathers every rank's candidates so that all ranks apply the same pushes and
hold identical queues.
"""
import torch
import torch.distributed as dist


class CSQueue:
    """One FIFO sub-queue of capacity ``capacity`` per class.

    Each :meth:`update` (once per training step) serves up to
    ``classes_per_step`` classes (P), in a rotation so that every class is
    served, and pushes the ``per_class`` (Q) highest-scoring candidates of each.

    Args:
        num_classes: C, the number of sub-queues.
        capacity: K, the capacity of each sub-queue.
        classes_per_step: P, the classes served per update.
        per_class: Q, the most images pushed per served class and update.
    """

    def __init__(self, num_classes, capacity, classes_per_step, per_class):
        if min(num_classes, capacity, classes_per_step, per_class) < 1:
            raise ValueError("num_classes, capacity, classes_per_step and per_class must all be >= 1")
        self.num_classes = int(num_classes)
        self.capacity = int(capacity)
        self.classes_per_step = min(int(classes_per_step), self.num_classes)
        self.per_class = int(per_class)
        # Row c holds class c's indices oldest first in [0, fill[c]); -1 marks empty slots.
        self.queue = torch.full((self.num_classes, self.capacity), -1, dtype=torch.long)
        self.fill = torch.zeros(self.num_classes, dtype=torch.long)
        # The class the next rotation starts from.
        self.pointer = torch.zeros((), dtype=torch.long)

    # ------------------------------------------------------------------ state
    def __len__(self):
        return int(self.fill.sum())

    @property
    def min_fill(self):
        return int(self.fill.min())

    def items(self, cls):
        """Class ``cls``'s queued indices, oldest first."""
        return self.queue[cls, :int(self.fill[cls])].clone()

    def state_dict(self):
        return {"queue": self.queue.clone(), "fill": self.fill.clone(), "pointer": self.pointer.clone()}

    def load_state_dict(self, state):
        if tuple(state["queue"].shape) != (self.num_classes, self.capacity):
            raise ValueError(f"CSQueue state has shape {tuple(state['queue'].shape)}, expected "
                             f"({self.num_classes}, {self.capacity}): num_classes or queue_size differ")
        self.queue.copy_(state["queue"])
        self.fill.copy_(state["fill"])
        self.pointer.copy_(state["pointer"])

    # ------------------------------------------------------------------ writes
    def push(self, cls, index):
        """Append ``index`` to class ``cls``'s sub-queue; the oldest item leaves a full one.

        An index already in the sub-queue is moved to the newest end rather than
        stored twice, so that a class-balanced draw does not over-weight images
        met again in a later epoch.
        """
        row, n = self.queue[cls], int(self.fill[cls])
        present = (row[:n] == index).nonzero()
        if len(present):
            j = int(present[0])
            row[j:n - 1] = row[j + 1:n].clone()
            row[n - 1] = index
        elif n < self.capacity:
            row[n] = index
            self.fill[cls] = n + 1
        else:
            row[:-1] = row[1:].clone()
            row[-1] = index

    def select(self, labels, scores, min_score=float("-inf")):
        """Choose this step's pushes; returns [(class, positions into labels/scores), ...].

        Candidates are samples with ``score >= min_score``. Starting at the
        rotation pointer, the first P classes that have candidates are served,
        each with its Q highest-scoring candidates (ties: the earlier sample);
        the pointer then moves past the last class served.
        """
        labels = torch.as_tensor(labels).long().cpu()
        scores = torch.as_tensor(scores).float().cpu()
        candidate = scores >= min_score
        start = int(self.pointer)
        chosen, last = [], None
        for step in range(self.num_classes):
            cls = (start + step) % self.num_classes
            pos = (candidate & (labels == cls)).nonzero().flatten()
            if len(pos) == 0:
                continue
            order = torch.sort(scores[pos], descending=True, stable=True).indices
            chosen.append((cls, pos[order[:self.per_class]]))
            last = cls
            if len(chosen) == self.classes_per_step:
                break
        if last is not None:
            self.pointer.fill_((last + 1) % self.num_classes)
        return chosen

    def update(self, indices, labels, scores, min_score=float("-inf"), group=None):
        """Select and push from one step's candidates; returns the number pushed.

        ``indices`` are dataset indices, ``labels`` pseudo-labels and ``scores``
        detector scores (higher = more likely synthetic), one per sample. When
        torch.distributed is initialised, every rank's candidates are gathered
        (in rank order) first, so all ranks push the same items and stay identical.
        """
        indices, labels, scores = _gather(group, indices, labels, scores)
        pushed = 0
        for cls, pos in self.select(labels, scores, min_score):
            for index in indices[pos].tolist():
                self.push(cls, index)
                pushed += 1
        return pushed

    # ------------------------------------------------------------------ reads
    def sample(self, n, generator=None):
        """Draw ``n`` queued indices, class-balanced; returns (indices, classes).

        The non-empty classes are visited in a random order and repeated until
        ``n`` draws are made, so class counts differ by at most one; within a
        class an item is drawn uniformly (with replacement). Uses only
        ``generator``, never the global RNG.
        """
        nonempty = (self.fill > 0).nonzero().flatten()
        if len(nonempty) == 0:
            raise RuntimeError("CSQueue.sample: the queue is empty")
        order = nonempty[torch.randperm(len(nonempty), generator=generator)]
        classes = order.repeat(-(-n // len(order)))[:n]
        slots = (torch.rand(n, generator=generator) * self.fill[classes]).long()
        return self.queue[classes, slots], classes


def _gather(group, indices, labels, scores):
    """Every rank's (indices, labels, scores) concatenated in rank order, as CPU (long, long, float) tensors.

    Not distributed, the tensors are only brought to the CPU (the indices
    usually are already there). Distributed, one all_gather of (index, label,
    score) rows on the scores' device, which NCCL needs: float64 holds every
    index below 2^53, every label and every float32 score exactly.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size(group) == 1:
        return indices.detach().long().cpu(), labels.detach().long().cpu(), scores.detach().float().cpu()
    device = scores.device
    rows = torch.stack([t.detach().to(device, torch.float64) for t in (indices, labels, scores)], dim=1)
    parts = [torch.empty_like(rows) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, rows.contiguous(), group=group)
    rows = torch.cat(parts).cpu()
    return rows[:, 0].long(), rows[:, 1].long(), rows[:, 2].float()
