"""common.lora_mix: a mixed-adapter batch gives each sample its own LoRA, y_i = W x_i + b (+ s B A x_i for the
samples named by the adapter; Hu et al. 2022, Eq. 3), computed here from the weights, in eval and in training
mode, with gradients; the LoRA runs on the adapter's rows only; the mixed forwards go away on exit and on an error;
a wrong batch, nesting, a second adapter name, disabled adapters and a model without a LoRA are refused."""

from __future__ import annotations

import pytest
import torch

from common.lora_mix import BASE, active_names, lora_layers, mixed_adapters, supports_mixed_batch


class Two(torch.nn.Module):
    """x [N, 3] -> relu(lin(x)) [N, 4]; ``lin`` is called without extra arguments, like diffusers' to_q."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.lin(x))


def with_lora():
    from peft import LoraConfig, inject_adapter_in_model

    torch.manual_seed(0)
    model = inject_adapter_in_model(LoraConfig(r=2, lora_alpha=4, target_modules=["lin"]), Two()).eval()
    layer = model.lin
    with torch.no_grad():
        layer.lora_B["default"].weight.normal_()  # peft's B = 0 would make the LoRA invisible
    return model, layer


def closed_form(layer, x: torch.Tensor, use_lora: bool) -> torch.Tensor:
    W, b = layer.base_layer.weight, layer.base_layer.bias
    A, B = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    y = x @ W.T + b
    return torch.relu(y + (4 / 2) * (x @ A.T) @ B.T if use_lora else y)  # scaling = alpha / r


def test_each_sample_gets_its_adapter_and_the_mixed_forward_goes_away():
    model, layer = with_lora()
    x = torch.randn(5, 3)
    names = [BASE, "default", BASE, "default", "default"]
    assert supports_mixed_batch(model, "default") and lora_layers(model) == [layer]
    with torch.no_grad(), mixed_adapters(model, names):
        assert active_names(layer) == tuple(names)
        y = model(x)
    expected = torch.stack([closed_form(layer, x[i], n == "default") for i, n in enumerate(names)])
    torch.testing.assert_close(y, expected, rtol=1e-6, atol=1e-6)
    assert (closed_form(layer, x, True) - closed_form(layer, x, False)).abs().max() > 1e-2
    assert active_names(layer) is None and "forward" not in layer.__dict__
    torch.testing.assert_close(model(x), closed_form(layer, x, True), rtol=1e-6, atol=1e-6)  # plain call again


def test_the_lora_runs_on_the_adapter_rows_only():
    model, layer = with_lora()
    seen = []
    layer.lora_A["default"].register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[0]))
    names = [BASE, BASE, "default", "default", BASE, "default"]
    with torch.no_grad(), mixed_adapters(model, names):
        y = model(torch.randn(6, 3))
    assert seen == [2, 1] and y.shape == (6, 4)  # runs [2:4] and [5:6]; the BASE rows never enter A
    with torch.no_grad(), mixed_adapters(model, [BASE] * 3):
        model(torch.randn(3, 3))
    assert seen == [2, 1]


def test_training_mode_and_gradients_follow_the_mask():
    model, layer = with_lora()
    model.train()  # lora_dropout = 0: training mode changes nothing
    x = torch.randn(4, 3)
    names = ["default", BASE, BASE, "default"]
    with torch.inference_mode(), mixed_adapters(model, names):  # then the same block with autograd
        model(x)
    with mixed_adapters(model, names):
        y = model(x)
    y.sum().backward()
    A, B = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    A_ref, B_ref = A.detach().clone().requires_grad_(True), B.detach().clone().requires_grad_(True)
    W, b = layer.base_layer.weight.detach(), layer.base_layer.bias.detach()
    use = torch.tensor([1.0, 0.0, 0.0, 1.0])[:, None]
    y_ref = torch.relu(x @ W.T + b + use * 2 * (x @ A_ref.T) @ B_ref.T)
    y_ref.sum().backward()
    torch.testing.assert_close(y, y_ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(A.grad, A_ref.grad, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(B.grad, B_ref.grad, rtol=1e-6, atol=1e-6)
    assert B.grad.abs().max() > 0


def test_the_whole_batch_and_the_unfused_paths_match_the_closed_form():
    """A run over the whole batch (with autograd) and a LoRA in another dtype than its layer's output (peft's B,
    scale and add as three ops instead of one addmm_) give the same y and LoRA gradients as Eq. 3 by hand."""
    model, layer = with_lora()
    x = torch.randn(3, 3)
    A, B = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    with mixed_adapters(model, ["default"] * 3):
        y = model(x)
    y.square().sum().backward()
    A_ref, B_ref = A.detach().clone().requires_grad_(True), B.detach().clone().requires_grad_(True)
    W, b = layer.base_layer.weight.detach(), layer.base_layer.bias.detach()
    y_ref = torch.relu(x @ W.T + b + 2 * (x @ A_ref.T) @ B_ref.T)
    y_ref.square().sum().backward()
    torch.testing.assert_close(y, y_ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(A.grad, A_ref.grad, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(B.grad, B_ref.grad, rtol=1e-6, atol=1e-6)
    for sub in (layer.lora_A["default"], layer.lora_B["default"]):
        sub.double()  # the LoRA in float64, the layer's output float32: the unfused path
    names = ["default", BASE, "default"]
    with torch.no_grad(), mixed_adapters(model, names):
        y = model(x)
    A64, B64 = A.detach(), B.detach()
    use = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)[:, None]
    expected = torch.relu(x.double() @ W.T.double() + b.double() + use * 2 * (x.double() @ A64.T) @ B64.T).float()
    torch.testing.assert_close(y, expected, rtol=1e-6, atol=1e-6)


def test_mixed_forwards_are_removed_after_an_error_and_misuse_is_refused():
    model, layer = with_lora()
    with pytest.raises(ValueError, match="2 adapter names for a batch of 3"), torch.no_grad():
        with mixed_adapters(model, [BASE] * 2):
            model(torch.randn(3, 3))
    assert active_names(layer) is None and "forward" not in layer.__dict__
    with mixed_adapters(model, [BASE]), pytest.raises(RuntimeError, match="nest"):
        with mixed_adapters(model, [BASE]):
            pass
    with pytest.raises(ValueError, match="at most one adapter"), mixed_adapters(model, ["default", "other"]):
        pass
    assert not supports_mixed_batch(model, "other")  # an adapter the layers do not hold
    with pytest.raises(ValueError, match="not a plain LoRA"), mixed_adapters(model, ["other"]):
        pass
    layer.enable_adapters(False)
    assert not supports_mixed_batch(model, "default")
    with pytest.raises(ValueError, match="enabled"), mixed_adapters(model, ["default"]):
        pass
    with pytest.raises(ValueError, match="peft LoRA"), mixed_adapters(Two(), [BASE]):
        pass
    assert not supports_mixed_batch(Two(), "default")
