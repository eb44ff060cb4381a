"""A peft LoRA computed in its frozen model's dtype (fp16 / bf16) and trained on float32 master weights.

A peft LoRA layer computes y = W x + s B(A(x)) (Hu et al. 2022, Eq. 3) after casting x to the dtype of A's weight
(peft ``lora.Linear.forward``: ``_cast_input_dtype``). Kept in float32 for AdamW (an fp16 weight of |w| ~ 0.25 has
a spacing of 2.4e-4 and would drop lr-1e-4 updates), a LoRA inside an fp16 UNet casts every attention input to
float32 and runs float32 GEMMs on CUDA cores: on an H200 that made VSD's LoRA fit 23 % slower than the same fit in
fp16 (SD 2.1 base, 10 prompts: 97.5 vs 79.5 ms, ``benchmarks/probe_vsd_parts.py``).

:class:`LoraMasters` is mixed-precision training with master weights (Micikevicius et al. 2018, "Mixed Precision
Training", Sec. 3.1), the way diffusers' LoRA scripts keep trainable weights in float32: the layers hold their
LoRA weights in the model's dtype; the optimiser gets float32 masters. After the backward each layer weight's
gradient is added to its master's, in float32 (a post-accumulate-grad hook; the low-precision ``.grad`` is
dropped); :meth:`LoraMasters.push` copies the masters into the layers when an optimiser step has changed them (the
tensors' version counters tell, on the host), in place, so CUDA graphs that read the layers' memory see it. Not
a per-access cast (``torch.nn.utils.parametrize``): measured, its ~500 tiny cast kernels per UNet call made a
one-prompt VSD step 32 % slower (49 -> 65 ms); not torch.autocast: it would move the frozen model's norms and
softmax to float32.
"""

from __future__ import annotations

import torch

from common.lora_mix import lora_layers


def lora_weights(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The lora_A / lora_B weights (one pair per adapter) of every peft LoRA layer in ``model``."""
    return [sub.weight for layer in lora_layers(model) for table in (layer.lora_A, layer.lora_B)
            for sub in table.values()]


class LoraMasters:
    """Float32 masters of the trainable LoRA weights of ``model``, which compute in ``dtype`` (module doc).

    ``params``: what the optimiser trains (the layer weights themselves when ``dtype`` is float32). Call
    :meth:`push` before a forward that must see the latest optimiser step. Raises ValueError without a LoRA.
    """

    def __init__(self, model: torch.nn.Module, dtype: torch.dtype):
        weights = [w for w in lora_weights(model) if w.requires_grad]
        if not weights:
            raise ValueError("LoraMasters: the model has no trainable peft LoRA weights")
        if dtype == torch.float32:
            for w in weights:
                w.data = w.data.float()
            self.low, self.params = [], weights
            return
        self.params = [torch.nn.Parameter(w.detach().float().clone()) for w in weights]
        self.low = weights
        for w, master in zip(weights, self.params):
            w.data = w.data.to(dtype)
            w.register_post_accumulate_grad_hook(lambda w, master=master: self._grad_to_master(w, master))
        self._versions = self._version_of_masters()

    @staticmethod
    def _grad_to_master(weight: torch.Tensor, master: torch.nn.Parameter) -> None:
        grad = weight.grad.float()
        master.grad = grad if master.grad is None else master.grad.add_(grad)
        weight.grad = None

    def _version_of_masters(self) -> tuple[int, ...]:
        return tuple(m._version for m in self.params)

    def push(self) -> None:
        """Copy the masters into the layers (cast to ``dtype``) if they changed since the last push."""
        if not self.low:
            return
        versions = self._version_of_masters()
        if versions != self._versions:
            with torch.no_grad():
                torch._foreach_copy_(self.low, self.params)  # one multi-tensor copy with the cast
            self._versions = versions


def lora_compute_dtype(model: torch.nn.Module) -> torch.dtype | None:
    """The dtype the LoRA weights of ``model`` compute in (the first lora_A's), None without a LoRA."""
    weights = lora_weights(model)
    return weights[0].dtype if weights else None


__all__ = ["LoraMasters", "lora_compute_dtype", "lora_weights"]
