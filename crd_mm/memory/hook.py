"""CRDMemoryBankHook: the single owner of every contrastive memory bank in a run."""

import os
import os.path as osp
import shutil
import uuid
from typing import Dict, List, Optional

import torch
from mmengine import dist
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS
from mmengine.runner import find_latest_checkpoint

from ..compat import _fsync_directory
from .anchor_scores import SHARD_SCORING
from .bank import MemoryBankClient
from .base import BaseContrastMemory, build_memory, memory_type
from .dataset_rows import dataset_rows

CHECKPOINT_KEY = 'crd_memory_banks'
WORLD_SIZE_KEY = 'crd_memory_world_size'
# the folder, beside the checkpoints, of the per-rank files of memories whose state is per rank
SLICE_STORE = 'crd_memory'


def model_of(runner) -> torch.nn.Module:
    """The runner's model, unwrapped from DDP or another model wrapper."""
    return runner.model.module if is_model_wrapper(runner.model) else runner.model


def shared_seed(runner, configured: Optional[int], device) -> int:
    """The seed of the banks' initial rows and sampler base: rank 0's, identical on every rank.

    With ``randomness=dict(diff_rank_seed=True)`` mmengine gives rank r the seed
    S + r (and a seed it drew at random when none is set); banks seeded from
    that would start different on every rank. Rank 0's seed is broadcast instead
    (the sampler still mixes in the rank, so negatives differ between ranks).
    """
    seed = torch.tensor(
        [configured if configured is not None else (runner.seed or 0)],
        dtype=torch.int64,
        device=device,
    )
    dist.broadcast(seed, src=0)
    return int(seed.item())


def check_ranks_agree(banks: Dict[str, BaseContrastMemory], when: str) -> None:
    """Raise if any rank's banks differ from the others' (a cheap checksum, one all-reduce)."""
    if dist.get_world_size() == 1 or not banks:
        return
    local = torch.cat([bank.fingerprint() for bank in banks.values()])
    low, high = local.clone(), local.clone()
    dist.all_reduce(low, op='min')
    dist.all_reduce(high, op='max')
    if not torch.equal(low, high):
        raise RuntimeError(
            f'CRDMemoryBankHook: the memory banks differ between ranks {when}. Every rank must '
            'build them from the same training set, config and seed; check that all processes '
            'run the same config and data, and resume all ranks from the same checkpoint.'
        )


def best_improves(hook: CheckpointHook, runner, metrics: Optional[dict]) -> bool:
    """Whether ``hook`` (with ``save_best``) saves a new best checkpoint for ``metrics``.

    Mirrors ``CheckpointHook._save_best_checkpoint``'s comparison with the best
    score in the message hub (the same on every rank, as are the metrics);
    True when it cannot tell (``save_best='auto'`` before its first evaluation).
    """
    if not metrics:
        return False  # CheckpointHook skips empty metrics
    keys = hook.key_indicators
    if 'auto' in keys:
        return True
    for key, rule in zip(keys, hook.rules):
        score_key = 'best_score' if len(keys) == 1 else f'best_score_{key}'
        info = runner.message_hub.runtime_info
        best = info[score_key] if score_key in info else hook.init_value_map[rule]
        score = metrics.get(key)
        if score is not None and hook.is_better_than[key](score, best):
            return True
    return False


def checkpoint_due(runner, event: str, metrics: Optional[dict] = None) -> bool:
    """Whether a ``CheckpointHook`` saves after this train 'iter', train 'epoch' or 'val' epoch.

    Mirrors CheckpointHook's own schedule (and, after an evaluation, its
    ``save_best`` decision for ``metrics``), so that the per-rank memory states
    are written on every rank just before a rank-0-only save.
    """
    for hook in runner.hooks:
        if not isinstance(hook, CheckpointHook):
            continue
        if (
            event == 'iter'
            and not hook.by_epoch
            and (
                hook.every_n_train_iters(runner, hook.interval, hook.save_begin)
                or (hook.save_last and hook.is_last_train_iter(runner))
            )
        ):
            return True
        if (
            event == 'epoch'
            and hook.by_epoch
            and (
                hook.every_n_epochs(runner, hook.interval, hook.save_begin)
                or (hook.save_last and hook.is_last_train_epoch(runner))
            )
        ):
            return True
        if event == 'val' and hook.save_best and best_improves(hook, runner, metrics):
            return True
    return False


def checkpoint_dir(runner) -> Optional[str]:
    """The folder ``CheckpointHook`` saves into (its ``out_dir``, set in its ``before_train``)."""
    for hook in runner.hooks:
        if isinstance(hook, CheckpointHook):
            return str(hook.out_dir if hook.out_dir is not None else runner.work_dir)
    return None


def save_atomically(obj, path: str) -> None:
    """``torch.save(obj, path)`` that never leaves a half-written ``path`` (as checkpoints).

    Written to ``<path>.partial``, fsynced, renamed over ``path`` and the
    directory fsynced (the pattern of :mod:`crd_mm.compat`'s checkpoint
    writes), streamed to the file without a serialised copy in memory.
    """
    directory = osp.dirname(osp.abspath(path))
    os.makedirs(directory, exist_ok=True)
    partial = f'{path}.partial'
    try:
        with open(partial, 'wb') as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
        _fsync_directory(directory)
    finally:
        if osp.exists(partial):
            os.remove(partial)


def merge_rows(per_rank: List[dict]) -> dict:
    """One whole state from every rank's state: ``row_keys`` tensors concatenated in rank order.

    For a memory that holds its whole state (a replicated bank) resuming a
    run whose memory state was written per rank (a sharded bank).
    """
    parts = sorted(per_rank, key=lambda part: part.get('rank', 0))
    row_keys = parts[0].get('row_keys', ())
    whole = {
        key: value.clone() if isinstance(value, torch.Tensor) else value  # not the mmap
        for key, value in parts[0].items()
        if key not in row_keys
    }
    for key in row_keys:
        whole[key] = torch.cat([part[key] for part in parts])
    return whole


def referenced_slices(path: str) -> Optional[set]:
    """The slice folders (in ``SLICE_STORE``) checkpoint ``path`` refers to; None if unreadable.

    Read with ``mmap=True``: the checkpoint's tensors are not loaded.
    """
    try:
        checkpoint = torch.load(path, map_location='cpu', mmap=True, weights_only=True)
    except Exception:  # noqa: BLE001  (any unreadable file: keep every slice folder)
        return None
    states = checkpoint.get(CHECKPOINT_KEY, {}) if isinstance(checkpoint, dict) else {}
    return {
        state['per_rank_files'].split('/')[1]
        for state in states.values()
        if isinstance(state, dict) and 'per_rank_files' in state
    }


def open_slices(manifest: dict, checkpoint: Optional[str], name: str) -> List[dict]:
    """Every rank's state file of a memory saved per rank, opened with ``mmap=True``.

    The folder is looked up beside the resumed ``checkpoint`` first (a work dir
    that was moved or copied), then where it was saved. Nothing is read until
    a tensor is sliced.
    """
    candidates = [osp.join(manifest['saved_in'], manifest['per_rank_files'])]
    if checkpoint and '://' not in str(checkpoint):
        candidates.insert(0, osp.join(osp.dirname(str(checkpoint)), manifest['per_rank_files']))
    folder = next((c for c in candidates if osp.isdir(c)), None)
    world_size = manifest['world_size']
    files = (
        [osp.join(folder, f'rank{r}-of{world_size}.pth') for r in range(world_size)]
        if folder
        else []
    )
    missing = [f for f in files if not osp.isfile(f)]
    if folder is None or missing:
        raise FileNotFoundError(
            f"the resumed checkpoint keeps memory '{name}' in {world_size} per-rank files, in "
            f'{" or ".join(candidates)}, but {missing or "the folder"} is missing. Keep the '
            f'{SLICE_STORE}/ folder beside its checkpoints (copy or move them together).'
        )
    return [torch.load(f, map_location='cpu', mmap=True, weights_only=True) for f in files]


def restart_started_workers(runner) -> None:
    """Restart train-dataloader workers that started before the dataset's indices were shifted.

    ``IterBasedTrainLoop`` starts its iterator (and so its worker processes,
    each with a copy of the dataset) when it is built, before any hook runs;
    workers started then would not shift a concatenated dataset's sample
    indices. An epoch-based loop starts its workers after ``before_train``.
    """
    loader = runner.train_dataloader
    if not getattr(loader, 'num_workers', 0):
        return
    infinite = getattr(runner.train_loop, 'dataloader_iterator', None)
    started = [getattr(infinite, '_iterator', None), getattr(loader, '_iterator', None)]
    started = {id(it): it for it in started if hasattr(it, '_shutdown_workers')}
    if not started:
        return
    for iterator in started.values():
        iterator._shutdown_workers()
    if hasattr(loader, '_iterator'):
        loader._iterator = None  # persistent workers: make the next iter() start new ones
    if infinite is not None:
        infinite._iterator = iter(loader)


@HOOKS.register_module()
class CRDMemoryBankHook(Hook):
    """Builds, synchronises, logs and checkpoints the memory banks of CRD-style losses.

    Like mmengine's ``EMAHook``, it owns training state that is not part of the
    model: before training it sizes one bank per bank-using loss (``CRDLoss``,
    ``CRCDLoss``) from the training dataset's distinct samples and labels on
    the model's device (one row per sample, also through ``ConcatDataset``,
    ``RepeatDataset`` and ``ClassBalancedDataset``: see
    :mod:`crd_mm.memory.dataset_rows`); after every iteration it gathers all
    ranks' staged embeddings and applies the same update on every rank; it
    writes banks and normalisation constants into checkpoints and restores
    them on resume. ``dict(type=
    'CRDMemoryBankHook')`` needs no arguments.

    Args:
        bank_dtype (str): 'float32', 'float16' or 'bfloat16' storage (half
            precision halves an ImageNet bank). Defaults to 'float32'.
        seed (int, optional): seeds bank initialisation and negative sampling.
            Defaults to None: the runner's seed, taken from rank 0 (identical
            on every rank, also with ``diff_rank_seed=True``).
        shard_banks (bool): store each bank's rows split across the W ranks
            (:class:`~crd_mm.memory.ShardedMemoryBank`, N x D x bytes x 2 / W
            per rank) instead of whole on every rank; negatives, losses and
            updates are those of replicated banks. At every scheduled save each
            rank writes its own rows to ``<checkpoint dir>/crd_memory/iter_<n>_<id>/
            <loss>/rank<r>-of<W>.pth`` and the checkpoint records only that
            folder, so no file and no process holds a whole bank; a resume reads
            only the rows each rank owns (also on another world size). Folders no
            remaining checkpoint refers to are removed after each save. Losses
            with ``memory='queue'`` keep their (small) queue on every rank.
            Defaults to False.
        shard_scoring (str, optional): how sharded banks score per-sample
            negatives (B, K): 'anchors' sends the batch's anchors to the ranks
            that own the rows, which return the scores (and in backward the
            anchors' gradients): about 20 bytes per requested row plus
            2 D x 4 x (W + 1) per anchor, per rank and step (see
            :mod:`crd_mm.memory.anchor_scores`); 'rows' fetches the B (K + 1)
            rows instead (8 + 2 D x bytes each). Same losses, gradients and
            banks. Shared negatives and ``CRCDLoss`` always fetch rows. Only with
            ``shard_banks=True``. Defaults to None ('anchors').
    """

    priority = 'NORMAL'

    def __init__(
        self,
        bank_dtype: str = 'float32',
        seed: Optional[int] = None,
        shard_banks: bool = False,
        shard_scoring: Optional[str] = None,
    ):
        if bank_dtype not in ('float32', 'float16', 'bfloat16'):
            raise ValueError(
                f"bank_dtype must be 'float32', 'float16' or 'bfloat16', got {bank_dtype!r}"
            )
        self.bank_dtype = getattr(torch, bank_dtype)
        self.seed = seed
        self.shard_banks = shard_banks
        if shard_scoring is not None and (not shard_banks or shard_scoring not in SHARD_SCORING):
            raise ValueError(
                f'shard_scoring must be one of {SHARD_SCORING} with shard_banks=True, got '
                f'shard_scoring={shard_scoring!r}, shard_banks={shard_banks!r}'
            )
        self.shard_scoring = shard_scoring or SHARD_SCORING[0]
        # per-rank memories' manifests for the saves at iteration ``_prepared_iter``
        self._prepared: Dict[str, dict] = {}
        self._prepared_iter: Optional[int] = None
        self._collect_slices = False  # a save happened: remove unreferenced slice folders
        self._slice_refs: Dict[tuple, Optional[set]] = {}  # checkpoint (path, mtime, size)
        self.banks: Dict[str, BaseContrastMemory] = {}
        self._resumed_state: Optional[dict] = None

    @staticmethod
    def _clients(runner) -> Dict[str, MemoryBankClient]:
        model = model_of(runner)
        return {name: m for name, m in model.named_modules() if isinstance(m, MemoryBankClient)}

    def before_train(self, runner) -> None:
        """Build a bank for each bank-using loss, then restore a resumed checkpoint's banks."""
        model = model_of(runner)
        clients = self._clients(runner)
        if not clients:
            print_log(
                'CRDMemoryBankHook: the model has no loss that uses a memory bank; '
                'the hook does nothing',
                logger='current',
                level=30,
            )
            return
        dataset = runner.train_dataloader.dataset
        rows = dataset_rows(dataset)  # one row per distinct sample, through dataset wrappers
        if rows.install():  # a concatenated dataset's indices are shifted from now on
            restart_started_workers(runner)
        num_samples = rows.num_rows
        needs_labels = any(c.bank_requirements()['needs_labels'] for c in clients.values())
        labels = rows.labels() if needs_labels else None
        device = next(runner.model.parameters()).device
        seed = shared_seed(runner, self.seed, device)
        for ordinal, (name, client) in enumerate(sorted(clients.items())):
            spec = client.bank_requirements()
            if spec['needs_labels'] and labels is None:
                raise ValueError(
                    f'{name} samples by class but the training set ({type(dataset).__name__}) has '
                    "no get_gt_labels(); set negative_sampling='uniform' and positive='exact'"
                )
            bank = build_memory(
                dict(spec, shard_scoring=self.shard_scoring),
                self.shard_banks,
                num_samples,
                labels if spec['needs_labels'] else None,
                device,
                self.bank_dtype,
                seed + ordinal,
            )
            client.attach_memory_bank(bank)
            self.banks[name] = bank
            distiller, _, loss_name = name.rpartition('.distill_losses.')
            if loss_name:
                client.check_distiller(model.get_submodule(distiller), loss_name)
        if self.shard_banks and not any(
            memory_type(c.bank_requirements(), True) == 'ShardedMemoryBank'
            for c in clients.values()
        ):
            raise ValueError(
                'CRDMemoryBankHook(shard_banks=True) has no bank to shard: no loss uses '
                "memory='bank'; drop shard_banks"
            )
        if self._resumed_state is not None:
            self._restore(self._resumed_state)
            self._resumed_state = None
        self._collect_slices = any(bank.collective_state for bank in self.banks.values())
        check_ranks_agree(
            self.banks, 'after they were built' + (' and restored' if runner._resume else '')
        )
        print_log(
            f'CRDMemoryBankHook: {len(self.banks)} bank(s) of {num_samples} samples on '
            f'{device} ({self.bank_dtype}): {", ".join(self.banks)}',
            logger='current',
        )

    def _gather_for_checkpoint(self, runner, event: str, metrics: Optional[dict] = None) -> None:
        """Before a scheduled (rank-0-only) save, every rank writes its per-rank memory states.

        ``CheckpointHook`` saves on rank 0 only and calls ``before_save_checkpoint``
        there, so the per-rank writes follow its schedule (:func:`checkpoint_due`)
        on every rank, just before it saves. Each memory with ``collective_state``
        gives this rank's state (``state_dict()``), written atomically to
        ``<out_dir>/crd_memory/iter_<n>_<id>/<loss>/rank<r>-of<W>.pth`` (a new
        folder per save: a checkpoint never points to files a later save
        replaced); all ranks finish writing before rank 0 saves the checkpoint,
        which records the folder (:meth:`before_save_checkpoint`). Every
        checkpoint saved at the same iteration (a step checkpoint and a best
        one) shares the folder. Collective.
        """
        collective = {name: bank for name, bank in self.banks.items() if bank.collective_state}
        if not collective or not checkpoint_due(runner, event, metrics):
            return
        step = runner.iter + (1 if event == 'iter' else 0)  # the checkpoint's meta['iter']
        if self._prepared_iter == step:  # written for an earlier save at this iteration
            return
        out_dir = checkpoint_dir(runner)
        if '://' in out_dir:
            raise ValueError(
                f"CRDMemoryBankHook(shard_banks=True) writes each rank's bank rows beside the "
                f'checkpoints, on a file system every rank can read; CheckpointHook saves to '
                f'{out_dir}. Set its out_dir to a local or shared directory.'
            )
        token = [uuid.uuid4().hex[:8]]
        dist.broadcast_object_list(token, src=0)
        folder = f'{SLICE_STORE}/iter_{step}_{token[0]}'
        rank, world_size = dist.get_rank(), dist.get_world_size()
        self._prepared = {}
        for name, bank in collective.items():
            relative = f'{folder}/{name}'
            save_atomically(
                bank.state_dict(), osp.join(out_dir, relative, f'rank{rank}-of{world_size}.pth')
            )
            self._prepared[name] = dict(
                kind=bank.kind,
                per_rank_files=relative,
                world_size=world_size,
                iter=step,
                saved_in=osp.abspath(out_dir),
            )
        dist.barrier()  # every rank's file is complete before rank 0 saves the checkpoint
        self._prepared_iter = step
        self._collect_slices = True  # after the save (or none): drop unreferenced folders

    def _collect_unreferenced_slices(self, runner) -> None:
        """On rank 0, after saves: remove slice folders that no checkpoint on disk refers to.

        The checkpoints ``CheckpointHook`` deleted (``max_keep_ckpts``) or
        replaced (``save_best``) take their folders with them; so do folders of
        saves that never completed (a crash between the slice files and the
        checkpoint). Nothing is removed if a checkpoint cannot be read.
        """
        if not self._collect_slices:
            return
        self._collect_slices = False
        out_dir = checkpoint_dir(runner)
        if not dist.is_main_process() or out_dir is None or '://' in out_dir:
            return
        store = osp.join(out_dir, SLICE_STORE)
        if not osp.isdir(store):
            return
        referenced = set()
        for entry in os.scandir(out_dir):
            if not (entry.name.endswith('.pth') and entry.is_file()):
                continue
            info = entry.stat()
            key = (entry.path, info.st_mtime_ns, info.st_size)
            if key not in self._slice_refs:
                self._slice_refs[key] = referenced_slices(entry.path)
            if self._slice_refs[key] is None:
                print_log(
                    f'CRDMemoryBankHook: could not read {entry.path}; kept every folder in {store}',
                    logger='current',
                    level=30,
                )
                return
            referenced |= self._slice_refs[key]
        for folder in os.listdir(store):
            if folder not in referenced:
                shutil.rmtree(osp.join(store, folder), ignore_errors=True)

    def after_train_epoch(self, runner) -> None:
        """Write per-rank memory state if CheckpointHook saves after this epoch (all ranks)."""
        self._gather_for_checkpoint(runner, 'epoch')

    def after_val_epoch(self, runner, metrics=None) -> None:
        """Write per-rank memory state if ``save_best`` keeps a new best from ``metrics``.

        Args:
            runner (Runner): the runner.
            metrics (dict, optional): this evaluation's metrics. Defaults to None.
        """
        self._gather_for_checkpoint(runner, 'val', metrics)

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        """Remove slice folders no checkpoint refers to any more, then seed this step's draws.

        Args:
            runner (Runner): the runner.
            batch_idx (int): the iteration's index in the epoch.
            data_batch (dict, optional): the batch. Defaults to None.
        """
        self._collect_unreferenced_slices(runner)
        for bank in self.banks.values():
            bank.reseed(runner.iter)

    def after_train(self, runner) -> None:
        """Remove slice folders that the last saves left unreferenced."""
        self._collect_unreferenced_slices(runner)

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        """Apply every rank's staged rows on every rank, then log constants and bank health."""
        for name, bank in self.banks.items():
            health = bank.apply_staged()
            tag = name.rsplit('.', 1)[-1]
            if bank.normalizers is not None:
                health.update(z_s=float(bank.normalizers[0]), z_t=float(bank.normalizers[1]))
            for key, value in health.items():
                runner.message_hub.update_scalar(f'train/{tag}/{key}', value)
        self._gather_for_checkpoint(runner, 'iter')

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        """Put every memory's state (per-rank memories: their files' folder) in the checkpoint."""
        if self.banks:
            step = checkpoint.get('meta', {}).get('iter')
            prepared = self._prepared if self._prepared_iter == step else {}
            states = {
                name: prepared.get(name) if bank.collective_state else bank.state_dict()
                for name, bank in self.banks.items()
            }
            if any(state is None for state in states.values()):
                print_log(
                    'CRDMemoryBankHook: this checkpoint is saved outside '
                    "CheckpointHook's schedule, so the ranks did not write their memory slices; "
                    'it holds no memory banks and a resume from it starts them fresh',
                    logger='current',
                    level=30,
                )
                return
            checkpoint[CHECKPOINT_KEY] = states
            checkpoint[WORLD_SIZE_KEY] = dist.get_world_size()

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        """On resume (before ``before_train``), keep the banks' state until they are built.

        Like mmengine's ``EMAHook``, state is restored only when the runner
        resumes: ``load_from`` without ``resume`` loads weights and the banks
        start fresh.
        """
        if not runner._resume:
            if CHECKPOINT_KEY in checkpoint:
                print_log(
                    'CRDMemoryBankHook: load_from loads weights only; the memory banks and '
                    'normalisation constants start fresh (use resume=True to restore them)',
                    logger='current',
                )
            return
        if CHECKPOINT_KEY not in checkpoint:
            print_log(
                'CRDMemoryBankHook: the resumed checkpoint has no memory banks; they start fresh',
                logger='current',
                level=30,
            )
            return
        self._resumed_state = {key: checkpoint.get(key) for key in (CHECKPOINT_KEY, WORLD_SIZE_KEY)}
        # where per-rank files are looked up first: beside the resumed checkpoint (as the
        # runner chose it: load_from, else the work dir's last checkpoint)
        work_dir = getattr(runner, 'work_dir', None)
        self._resumed_state['checkpoint'] = getattr(runner, '_load_from', None) or (
            find_latest_checkpoint(work_dir) if work_dir else None
        )
        if self.banks:  # resumed after the banks were built
            self._restore(self._resumed_state)
            self._resumed_state = None

    def _restore(self, checkpoint: dict) -> None:
        state = checkpoint[CHECKPOINT_KEY]
        missing = sorted(set(self.banks) - set(state))
        if missing:
            raise KeyError(
                f'the resumed checkpoint has no memory bank for {missing}; it holds '
                f'{sorted(state)}. Resume from a checkpoint of the same config.'
            )
        for name, bank in self.banks.items():
            saved_kind = bank.state_kind(state[name])
            if saved_kind != bank.kind:
                raise ValueError(
                    f"the resumed checkpoint's memory for '{name}' is a {saved_kind!r} but this "
                    f"config's loss uses a {bank.kind!r} (the loss's memory= option): resume with "
                    'the same config'
                )
            saved = state[name]
            if 'per_rank_files' in saved:  # written per rank: open the files, read nothing yet
                per_rank = open_slices(saved, checkpoint.get('checkpoint'), name)
                saved = dict(kind=saved['kind'], per_rank=per_rank)
                if not bank.collective_state:  # a memory that holds its whole state
                    saved = merge_rows(per_rank)
            bank.load_state_dict(saved, name=f"memory bank '{name}'")
        saved_world_size = checkpoint.get(WORLD_SIZE_KEY)
        if saved_world_size is not None and saved_world_size != dist.get_world_size():
            print_log(
                f'CRDMemoryBankHook: resuming on {dist.get_world_size()} process(es) a run '
                f'checkpointed on {saved_world_size}. The memory banks, normalisation constants '
                'and coverage are restored, but the data order (the sampler splits the data by '
                'rank) and the negatives drawn (seeded by rank) differ from an uninterrupted '
                f'{saved_world_size}-process run.',
                logger='current',
                level=30,
            )
