"""mmrazor 1.0.0's argument names, for the classes crd_mm registers in place of mmrazor's.

crd_mm's ``CRDLoss`` and ``CRDConnector`` are registered in mmrazor's
``MODELS`` registry under mmrazor's own names (``force=True``), so a config
written for mmrazor builds crd_mm's classes once crd_mm is imported. Where
mmrazor named an argument differently, or had one crd_mm does not need, the
error says what to write instead of Python's bare "unexpected keyword
argument".
"""

from inspect import signature
from typing import Dict, Mapping, Optional, Tuple

# mmrazor's argument -> (crd_mm's argument or None, what to do)
CRD_LOSS_RENAMED: Dict[str, Tuple[Optional[str], str]] = {
    'neg_num': ('num_negatives', 'the number of negatives per sample'),
    'dim_out': ('feat_dim', "the embedding width, the connectors' dim_out"),
    'sample_n': (
        None,
        'remove it: the memory bank has one row per training sample; CRDMemoryBankHook '
        "(custom_hooks = [dict(type='CRDMemoryBankHook')]) sizes it from the training set",
    ),
}


class MmrazorArgumentError(TypeError):
    """A crd_mm class got an argument under mmrazor's name (or an unknown one)."""


def check_mmrazor_arguments(
    cls: type, kwargs: Mapping, renamed: Optional[Mapping[str, Tuple[Optional[str], str]]] = None
) -> None:
    """Raise :class:`MmrazorArgumentError` if ``kwargs`` (the leftover arguments) is not empty.

    Args:
        cls (type): The class whose constructor got ``kwargs``; the message
            lists the arguments its ``__init__`` takes.
        kwargs (Mapping): The arguments the constructor does not take.
        renamed (Mapping, optional): mmrazor's argument -> (crd_mm's argument or
            None, an explanation). Defaults to None (no renamed arguments).
    """
    if not kwargs:
        return
    owner = cls.__name__
    accepted = [
        name
        for name, param in signature(cls.__init__).parameters.items()
        if name != 'self' and param.kind not in (param.VAR_POSITIONAL, param.VAR_KEYWORD)
    ]
    renamed = renamed or {}
    lines = []
    for key, value in kwargs.items():
        if key in renamed:
            new, note = renamed[key]
            if new is None:
                lines.append(f"  {key}={value!r} (mmrazor's {owner}): {note}")
            else:
                lines.append(f"  {key}={value!r} is mmrazor's name: write {new}={value!r} ({note})")
        else:
            lines.append(f'  {key}={value!r} is not an argument of {owner}')
    raise MmrazorArgumentError(
        '\n'.join(
            [
                f"crd_mm's {owner} (registered under mmrazor's name, replacing mmrazor's class) "
                'got argument(s) it does not take:',
                *lines,
                f'  {owner} takes: {", ".join(accepted)}.',
            ]
        )
    )
