"""Networks that thread their state explicitly: Norse (``SequentialState``, ``LIFCell`` and the other cells:
``forward(x, state) -> (output, state)``, ``state=None`` at rest) and any module written the same way (an snnTorch
network with ``init_hidden=False`` whose forward takes and returns its ``mem`` / ``syn`` tensors).

The state is whatever nested tuples, lists, dicts and named tuples of tensors the module returns; every tensor
whose first dimension is the batch is compacted with the batch. Newcomers run their first step from ``None``
(the module's own rest) in a call of their own, and their state joins the survivors' afterwards."""

from __future__ import annotations

import torch

from .state import PeerState, rows_of


def tree_map(fn, tree):
    if isinstance(tree, torch.Tensor):
        return fn(tree)
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):  # a named tuple (Norse's states)
        return type(tree)(*(tree_map(fn, t) for t in tree))
    if isinstance(tree, (tuple, list)):
        return type(tree)(tree_map(fn, t) for t in tree)
    if isinstance(tree, dict):
        return {k: tree_map(fn, v) for k, v in tree.items()}
    return tree


def tree_cat(a, b):
    """Two states of the same structure, rows of ``b`` after rows of ``a`` (``None`` parts stay ``None``)."""
    if isinstance(a, torch.Tensor):
        return torch.cat([a, b]) if a.dim() >= 1 else a
    if isinstance(a, tuple) and hasattr(a, "_fields"):
        return type(a)(*(tree_cat(x, y) for x, y in zip(a, b)))
    if isinstance(a, (tuple, list)):
        return type(a)(tree_cat(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return {k: tree_cat(a[k], b[k]) for k in a}
    return a


class ExplicitState(PeerState):
    """``call(x, state) -> (out, state)``: the module itself by default; a method name of it, or a function
    ``fn(module, x, state)`` (``seenn adapt --step``) for a network whose forward is not one step."""

    def __init__(self, module, call=None):
        super().__init__(module)
        if call is None:
            self.call = module
        elif isinstance(call, str):
            self.call = getattr(module, call)
        else:
            self.call = lambda x, state: call(module, x, state)
        self.state = None
        self.rows = 0

    def reset(self) -> None:
        self.state, self.rows = None, 0
        self.restore()

    def select(self, index: torch.Tensor) -> None:
        rows = self.rows
        self.state = tree_map(lambda t: t[index] if rows_of(t) == rows else t, self.state)
        self.rows = len(index)

    def run(self, x: torch.Tensor):
        old = self.rows if self.state is not None else 0
        if old and x.shape[0] > old:  # newcomers: their first step from rest, in a call of their own
            out_a, st_a = self.call(x[:old], self.state)
            out_b, st_b = self.call(x[old:], None)
            out = tree_cat(out_a, out_b)
            self.state = tree_cat(st_a, st_b)
        else:
            out, self.state = self.call(x, self.state)
        self.rows = x.shape[0]
        return out
