"""One memory row per training sample, through mmengine's dataset wrappers.

A sample's row is the ``sample_idx`` its data sample carries, which the
*innermost* dataset sets (its own index). Wrappers change that:

- ``ConcatDataset`` passes each inner dataset's own indices through, so the
  samples of two datasets would share rows: each inner dataset's indices are
  shifted by the rows of the datasets before it (an :class:`OffsetSampleIndex`
  step at the front of its pipeline).
- ``RepeatDataset`` and ``ClassBalancedDataset`` show a sample several times
  under several indices, but its ``sample_idx`` stays its own: it keeps its one
  row, and the rows are the distinct samples, not the wrapper's length.

The same dataset object reached twice (``ConcatDataset([a, a])``) is one set of
samples and keeps one set of rows. Labels for class-aware sampling are read
from the innermost datasets, in row order.
"""

from typing import Dict, List, NamedTuple, Optional, Tuple

import numpy as np
from mmengine.dataset import ClassBalancedDataset, RepeatDataset
from torch.utils.data import ConcatDataset


class OffsetSampleIndex:
    """Pipeline step: ``results['sample_idx'] += offset``, a concatenated dataset's first row."""

    def __init__(self, offset: int):
        self.offset = offset

    def __call__(self, results: dict) -> dict:
        results['sample_idx'] = results['sample_idx'] + self.offset
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(offset={self.offset})'


class DatasetRows(NamedTuple):
    """The memory rows of a training set: their number and each innermost dataset's first row."""

    num_rows: int
    leaves: List[Tuple[object, int]]  # (innermost dataset, its first row), in row order

    def labels(self) -> Optional[np.ndarray]:
        """(num_rows,) class labels in row order; None if a dataset has no ``get_gt_labels()``."""
        parts = []
        for dataset, _ in self.leaves:
            if not hasattr(dataset, 'get_gt_labels'):
                return None
            labels = np.asarray(dataset.get_gt_labels())
            if labels.ndim != 1:
                raise ValueError(
                    'class-aware CRD sampling needs one class label per sample; the '
                    f'training set {type(dataset).__name__} gives labels of shape {labels.shape}'
                )
            parts.append(labels)
        return np.concatenate(parts) if parts else None

    def install(self) -> bool:
        """Make every innermost dataset's samples carry their rows (shift the concatenated ones).

        Idempotent: an :class:`OffsetSampleIndex` put there earlier is updated.
        Returns whether a pipeline changed.
        """
        changed = False
        for dataset, offset in self.leaves:
            transforms = getattr(getattr(dataset, 'pipeline', None), 'transforms', None)
            if transforms and isinstance(transforms[0], OffsetSampleIndex):
                changed |= transforms[0].offset != offset
                transforms[0].offset = offset
                continue
            if offset == 0:
                continue
            if not isinstance(transforms, list):
                raise TypeError(
                    f'{type(dataset).__name__} inside a ConcatDataset has no mmengine pipeline '
                    '(Compose) to give its samples their own memory rows; the memory hook needs '
                    'mmengine BaseDataset-style datasets (pipeline=[...]) inside ConcatDataset'
                )
            transforms.insert(0, OffsetSampleIndex(offset))
            changed = True
        return changed


def dataset_rows(dataset) -> DatasetRows:
    """The memory rows of ``dataset``: one per distinct sample, through wrappers (module doc)."""
    seen: Dict[int, Tuple[object, int]] = {}

    def walk(node, offset: int) -> int:
        if isinstance(node, ConcatDataset):
            rows = 0
            for inner in node.datasets:
                rows += walk(inner, offset + rows)
            return rows
        if isinstance(node, (RepeatDataset, ClassBalancedDataset)):
            return walk(node.dataset, offset)
        if id(node) in seen:  # the same samples again: they have their rows already
            return 0
        seen[id(node)] = (node, offset)
        return len(node)

    num_rows = walk(dataset, 0)
    return DatasetRows(num_rows, list(seen.values()))
