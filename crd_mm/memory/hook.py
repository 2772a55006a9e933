"""CRDMemoryBankHook: the single owner of every contrastive memory bank in a run."""

from typing import Dict, Optional

import torch
from mmengine import dist
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS

from .bank import MemoryBankClient
from .base import BaseContrastMemory, build_memory, memory_type
from .dataset_rows import dataset_rows

CHECKPOINT_KEY = 'crd_memory_banks'
WORLD_SIZE_KEY = 'crd_memory_world_size'


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


def checkpoint_due(runner, event: str) -> bool:
    """Whether a ``CheckpointHook`` saves after this train 'iter', train 'epoch' or 'val' epoch.

    Mirrors CheckpointHook's own schedule, so that sharded banks (whose
    gathering needs every rank) are gathered just before a rank-0-only save.
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
        if event == 'val' and hook.save_best:
            return True
    return False


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
        bank_dtype (str): 'float32' or 'float16' storage (half an ImageNet bank's memory).
        seed (int, optional): seeds bank initialisation and negative sampling;
            defaults to the runner's seed, taken from rank 0 (identical on
            every rank, also with ``diff_rank_seed=True``).
        shard_banks (bool): store each bank's rows split across the W ranks
            (:class:`~crd_mm.memory.ShardedMemoryBank`, N x D x bytes x 2 / W
            per rank) instead of whole on every rank; negatives, losses and
            updates are those of replicated banks. Checkpoints hold the whole
            banks (gathered on rank 0), so a resume may use another world size.
            Losses with ``memory='queue'`` keep their (small) queue on every rank.
    """

    priority = 'NORMAL'

    def __init__(
        self, bank_dtype: str = 'float32', seed: Optional[int] = None, shard_banks: bool = False
    ):
        if bank_dtype not in ('float32', 'float16', 'bfloat16'):
            raise ValueError(
                f"bank_dtype must be 'float32', 'float16' or 'bfloat16', got {bank_dtype!r}"
            )
        self.bank_dtype = getattr(torch, bank_dtype)
        self.seed = seed
        self.shard_banks = shard_banks
        self._gathered: Dict[
            str, Optional[dict]
        ] = {}  # sharded banks' whole state, prepared for a save
        self.banks: Dict[str, BaseContrastMemory] = {}
        self._resumed_state: Optional[dict] = None

    @staticmethod
    def _clients(runner) -> Dict[str, MemoryBankClient]:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        return {name: m for name, m in model.named_modules() if isinstance(m, MemoryBankClient)}

    def before_train(self, runner) -> None:
        """Build a bank for each bank-using loss, then restore a resumed checkpoint's banks."""
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
                spec,
                self.shard_banks,
                num_samples,
                labels if spec['needs_labels'] else None,
                device,
                self.bank_dtype,
                seed + ordinal,
            )
            client.attach_memory_bank(bank)
            self.banks[name] = bank
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
        check_ranks_agree(
            self.banks, 'after they were built' + (' and restored' if runner._resume else '')
        )
        print_log(
            f'CRDMemoryBankHook: {len(self.banks)} bank(s) of {num_samples} samples on '
            f'{device} ({self.bank_dtype}): {", ".join(self.banks)}',
            logger='current',
        )

    def _gather_for_checkpoint(self, runner, event: str) -> None:
        """Before a scheduled (rank-0-only) save, gather sharded banks on rank 0. Collective."""
        if checkpoint_due(runner, event):
            self._gathered = {
                name: bank.state_dict()
                for name, bank in self.banks.items()
                if bank.collective_state
            }

    def after_train_epoch(self, runner) -> None:
        self._gather_for_checkpoint(runner, 'epoch')

    def after_val_epoch(self, runner, metrics=None) -> None:
        self._gather_for_checkpoint(runner, 'val')

    def before_train_iter(self, runner, batch_idx: int, data_batch=None) -> None:
        for bank in self.banks.values():
            bank.reseed(runner.iter)

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
        if self.banks:
            states = {
                name: self._gathered.get(name) if bank.collective_state else bank.state_dict()
                for name, bank in self.banks.items()
            }
            self._gathered = {}
            if any(state is None for state in states.values()):
                print_log(
                    'CRDMemoryBankHook: this checkpoint is saved outside '
                    "CheckpointHook's schedule, so the sharded memory banks were not gathered; it "
                    'holds no memory banks and a resume from it starts them fresh',
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
            bank.load_state_dict(state[name], name=f"memory bank '{name}'")
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
