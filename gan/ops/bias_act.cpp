// Host side of the fused bias + activation op: argument checks and the Python bindings.
// Kernels live in bias_act.cu. Written for this repository (StyleGAN2 semantics, not NVIDIA's code).
#include <torch/extension.h>

torch::Tensor bias_act_fwd_cuda(torch::Tensor x, torch::Tensor b, int64_t inner, int64_t act, double alpha,
                                double gain, double clamp);
torch::Tensor bias_act_grad_cuda(torch::Tensor dy, torch::Tensor y, int64_t act, double alpha, double gain,
                                 double clamp);

static torch::Tensor bias_act_fwd(torch::Tensor x, torch::Tensor b, int64_t inner, int64_t act, double alpha,
                                  double gain, double clamp) {
    TORCH_CHECK(x.is_cuda() && b.is_cuda(), "bias_act: tensors must be on a CUDA device");
    TORCH_CHECK(x.is_contiguous() && b.is_contiguous(), "bias_act: tensors must be contiguous");
    TORCH_CHECK(x.scalar_type() == b.scalar_type(), "bias_act: x and b must have the same dtype");
    TORCH_CHECK(inner >= 1 && b.dim() == 1, "bias_act: bad bias layout");
    return bias_act_fwd_cuda(x, b, inner, act, alpha, gain, clamp);
}

static torch::Tensor bias_act_grad(torch::Tensor dy, torch::Tensor y, int64_t act, double alpha, double gain,
                                   double clamp) {
    TORCH_CHECK(dy.is_cuda() && y.is_cuda(), "bias_act_grad: tensors must be on a CUDA device");
    TORCH_CHECK(dy.is_contiguous() && y.is_contiguous(), "bias_act_grad: tensors must be contiguous");
    TORCH_CHECK(dy.sizes() == y.sizes(), "bias_act_grad: dy and y must have the same shape");
    return bias_act_grad_cuda(dy, y.to(dy.scalar_type()), act, alpha, gain, clamp);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("bias_act_fwd", &bias_act_fwd, "y = clamp(act(x + b) * gain)");
    m.def("bias_act_grad", &bias_act_grad, "dx = dy * act'(y)");
}
