"""RSMatch's class-wise synthetic queue (CSQueue): the unlabeled images the detector is surest are synthetic, one
FIFO sub-queue per pseudo-class, served as its synthetic examples. It holds dataset indices, not pixels: the
images are re-read and re-augmented when drawn. Under DDP every rank applies the same pushes."""
import torch
import torch.distributed as dist


class CSQueue:
    """One FIFO sub-queue of capacity K per class; each :meth:`update` serves P classes in rotation, pushing
    the Q highest-scoring candidates of each."""

    def __init__(self, num_classes, capacity, classes_per_step, per_class):
        if min(num_classes, capacity, classes_per_step, per_class) < 1:
            raise ValueError("num_classes, capacity, classes_per_step and per_class must all be >= 1")
        self.num_classes, self.capacity, self.per_class = int(num_classes), int(capacity), int(per_class)
        self.classes_per_step = min(int(classes_per_step), self.num_classes)
        # Row c holds class c's indices oldest first in [0, fill[c]); -1 marks empty slots.
        self.queue = torch.full((self.num_classes, self.capacity), -1, dtype=torch.long)
        self.fill = torch.zeros(self.num_classes, dtype=torch.long)
        self.pointer = torch.zeros((), dtype=torch.long)  # the class the next rotation starts from

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

    def push(self, cls, index):
        """Append ``index`` to class ``cls``'s sub-queue (the oldest leaves a full one). An index already there
        moves to the newest end, so that images met again in a later epoch are not over-weighted."""
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
        """This step's pushes, [(class, positions)]: from the rotation pointer, the first P classes with samples
        scoring at least ``min_score``, each with its Q highest-scoring (ties: the earlier sample)."""
        labels = torch.as_tensor(labels).long().cpu()
        scores = torch.as_tensor(scores).float().cpu()
        candidate = scores >= min_score
        start, chosen, last = int(self.pointer), [], None
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
        """Select and push from one step's samples (dataset indices, pseudo-labels, scores); the number pushed.
        Distributed, every rank's samples are gathered first, in rank order."""
        indices, labels, scores = _gather(group, indices, labels, scores)
        pushed = 0
        for cls, pos in self.select(labels, scores, min_score):
            for index in indices[pos].tolist():
                self.push(cls, index)
                pushed += 1
        return pushed

    def sample(self, n, generator=None):
        """``n`` queued (indices, classes), class-balanced: the non-empty classes in a random order, repeated;
        within a class uniformly, with replacement. Uses only ``generator``."""
        nonempty = (self.fill > 0).nonzero().flatten()
        if len(nonempty) == 0:
            raise RuntimeError("CSQueue.sample: the queue is empty")
        order = nonempty[torch.randperm(len(nonempty), generator=generator)]
        classes = order.repeat(-(-n // len(order)))[:n]
        slots = (torch.rand(n, generator=generator) * self.fill[classes]).long()
        return self.queue[classes, slots], classes


def _gather(group, indices, labels, scores):
    """Every rank's (indices, labels, scores) in rank order, as CPU (long, long, float) tensors: one all_gather
    of float64 rows on the scores' device (NCCL needs it), exact for indices below 2^53."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size(group) == 1:
        return indices.detach().long().cpu(), labels.detach().long().cpu(), scores.detach().float().cpu()
    rows = torch.stack([t.detach().to(scores.device, torch.float64) for t in (indices, labels, scores)], dim=1)
    parts = [torch.empty_like(rows) for _ in range(dist.get_world_size(group))]
    dist.all_gather(parts, rows.contiguous(), group=group)
    rows = torch.cat(parts).cpu()
    return rows[:, 0].long(), rows[:, 1].long(), rows[:, 2].float()
