"""Several networks of one architecture run as one batched module: B independent fits in one step.

Deep Image Prior fits a network per image. Fitting the B planes of a stack one after the other
leaves a GPU mostly idle (one small image per launch); :class:`StackedNets` holds the B networks'
weights stacked along a leading axis and evaluates them with ``torch.func.vmap`` over
``functional_call``, so one forward/backward serves all B. Plane ``b`` of the input goes through
network ``b`` only: the networks share nothing, and since Adam is elementwise, an optimiser over
the stacked weights with the *sum* of the per-plane losses updates each network exactly as if it
were fitted alone.

BatchNorm runs on batch statistics (what DIP uses: its networks are never put in eval mode); its
running statistics are not tracked in the stacked copy (``vmap`` cannot update them in place).
"""
from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn


class StackedNets(nn.Module):
    """``len(nets)`` networks of one architecture; input ``(B, ...)`` -> each row through its own net.

    The weights are copies of ``nets``' (stacked, trainable); ``nets`` themselves are not changed.
    """

    def __init__(self, nets: Sequence[nn.Module]):
        super().__init__()
        from torch.func import replace_all_batch_norm_modules_, stack_module_state

        nets = list(nets)
        if not nets:
            raise ValueError("StackedNets needs at least one network.")
        params, buffers = stack_module_state(nets)
        self.names = list(params)
        self.weights = nn.ParameterList([nn.Parameter(params[k].detach().clone())
                                         for k in self.names])
        base = copy.deepcopy(nets[0]).to("meta")
        replace_all_batch_norm_modules_(base)
        kept = {name for name, _ in base.named_buffers()}
        self.buffer_names = [k for k in buffers if k in kept]
        for i, k in enumerate(self.buffer_names):
            self.register_buffer(f"buffer{i}", buffers[k].detach().clone())
        self.count = len(nets)
        object.__setattr__(self, "base", base)  # not a submodule: its meta weights are never used

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from torch.func import functional_call, vmap

        if x.shape[0] != self.count:
            raise ValueError(f"StackedNets of {self.count} networks got a batch of {x.shape[0]}.")
        params = dict(zip(self.names, self.weights, strict=False))
        buffers = {k: getattr(self, f"buffer{i}") for i, k in enumerate(self.buffer_names)}

        def one(p, b, xi):
            return functional_call(self.base, {**p, **b}, (xi[None],))[0]

        return vmap(one)(params, buffers, x)
