"""common.lora_precision: a peft LoRA in a bf16 / fp16 model computes in that dtype (no float32 cast of the
activations) while the optimiser trains float32 masters: y = W x + b + s B16 (A16 x) with A16 = A.to(dtype),
written out here with explicit casts (Hu et al. 2022, Eq. 3); the gradient reaches the masters in float32
(accumulated over backwards, the low-precision .grad dropped); an optimiser step reaches the layers at the next
push, in place; mixed-adapter batches still gate the LoRA per sample."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from common.lora_mix import BASE, mixed_adapters
from common.lora_precision import LoraMasters, lora_compute_dtype

LOW = torch.bfloat16  # CPU matmuls in bf16 are native; fp16 goes the same code path


class Two(torch.nn.Module):
    """x [N, 3] -> lin(x) [N, 4]."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)


def low_model():
    """A bf16 Linear with a float32 peft LoRA (r = 2, alpha = 4: scaling 2) whose B is not zero."""
    from peft import LoraConfig, inject_adapter_in_model

    torch.manual_seed(0)
    model = inject_adapter_in_model(LoraConfig(r=2, lora_alpha=4, target_modules=["lin"]), Two())
    model.lin.base_layer.to(LOW)
    with torch.no_grad():
        model.lin.lora_B["default"].weight.normal_()
    return model


def low_weights(model):
    layer = model.lin
    return layer.lora_A["default"].weight, layer.lora_B["default"].weight


def by_hand(model, x: torch.Tensor, A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    base = model.lin.base_layer
    return F.linear(x, base.weight, base.bias) + F.linear(F.linear(x, A.to(LOW)), B.to(LOW)) * 2


def input_dtypes(model, x: torch.Tensor) -> list[torch.dtype]:
    """The dtype lora_A sees its input in (peft casts x to lora_A's weight dtype first)."""
    seen: list[torch.dtype] = []
    handle = model.lin.lora_A["default"].register_forward_pre_hook(lambda m, args: seen.append(args[0].dtype))
    model(x)
    handle.remove()
    return seen


def test_the_lora_computes_in_bf16_and_its_float32_masters_get_the_gradient():
    model = low_model()
    x = torch.randn(5, 3).to(LOW)
    assert input_dtypes(model, x) == [torch.float32]  # peft's own way: the activations cast to float32
    A32, B32 = (w.detach().clone() for w in low_weights(model))
    masters = LoraMasters(model, LOW)
    A, B = masters.params
    torch.testing.assert_close(A, A32, rtol=0, atol=0)
    assert A.dtype == B.dtype == torch.float32 and A.requires_grad and lora_compute_dtype(model) == LOW
    assert input_dtypes(model, x) == [LOW]
    A_ref, B_ref = A.detach().clone().requires_grad_(True), B.detach().clone().requires_grad_(True)
    for _ in range(2):  # two backwards accumulate, as .grad does
        y = model(x)
        assert y.dtype == LOW
        expected = by_hand(model, x, A_ref, B_ref)
        torch.testing.assert_close(y, expected, rtol=0, atol=0)  # the same bf16 ops
        y.float().square().sum().backward()
        expected.float().square().sum().backward()
    assert all(w.grad is None for w in low_weights(model))  # moved to the masters
    assert A.grad.dtype == torch.float32 and A.grad.abs().max() > 0 and B.grad.abs().max() > 0
    torch.testing.assert_close(A.grad, A_ref.grad, rtol=0, atol=0)
    torch.testing.assert_close(B.grad, B_ref.grad, rtol=0, atol=0)


def test_an_optimiser_step_on_the_masters_reaches_the_layers_at_the_next_push():
    model = low_model()
    masters = LoraMasters(model, LOW)
    x = torch.randn(5, 3).to(LOW)
    before = model(x).detach()
    opt = torch.optim.AdamW(masters.params, lr=0.05)
    model(x).float().sum().backward()
    opt.step()
    storage = [w.data_ptr() for w in low_weights(model)]
    torch.testing.assert_close(model(x).detach(), before, rtol=0, atol=0)  # not pushed yet
    masters.push()
    after = model(x).detach()
    assert (after - before).abs().max() > 1e-2 and [w.data_ptr() for w in low_weights(model)] == storage
    A, B = (p.detach() for p in masters.params)
    torch.testing.assert_close(after, by_hand(model, x, A, B), rtol=0, atol=0)
    with torch.no_grad():
        low_weights(model)[0].zero_()
    masters.push()  # the masters did not change: nothing is copied
    assert low_weights(model)[0].abs().max() == 0


def test_mixed_adapter_batches_gate_the_low_precision_lora_per_sample():
    model = low_model()
    A, B = (p.detach() for p in LoraMasters(model, LOW).params)
    x = torch.randn(4, 3).to(LOW)
    names = [BASE, "default", "default", BASE]
    with torch.no_grad(), mixed_adapters(model, names):
        y = model(x)
        plain = F.linear(x, model.lin.base_layer.weight, model.lin.base_layer.bias)
    with torch.no_grad():
        lora = by_hand(model, x, A, B)
    for i, name in enumerate(names):  # the LoRA rows: one bf16 rounding apart (lora_mix fuses B, s and the add)
        torch.testing.assert_close(y[i], (lora if name != BASE else plain)[i], rtol=2 ** -7 if name != BASE else 0,
                                   atol=0)
    assert (lora - plain).abs().max() > 0.1


def test_float32_trains_the_layer_weights_themselves_and_a_model_without_a_lora_is_refused():
    model = low_model()
    masters = LoraMasters(model, torch.float32)
    assert masters.params == list(low_weights(model)) and all(p.dtype == torch.float32 for p in masters.params)
    masters.push()  # nothing to copy
    assert lora_compute_dtype(model) == torch.float32 and lora_compute_dtype(Two()) is None
    with pytest.raises(ValueError, match="no trainable peft LoRA"):
        LoraMasters(Two(), LOW)
