// CUDA kernels for the fused bias + activation op (piecewise-linear activations only).
// act: 0 = linear, 1 = relu, 2 = lrelu. clamp < 0 disables clamping. alpha, gain and clamp arrive as double and
// are cast to the accumulation type, so float64 tensors keep full precision (sqrt(2) in float32 is off by 2e-8).
#include <torch/extension.h>
#include <c10/cuda/CUDAStream.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAGuard.h>

template <typename scalar_t>
__global__ void bias_act_fwd_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ b,
                                    scalar_t* __restrict__ y, int64_t n, int64_t inner, int64_t channels,
                                    int act, double alpha, double gain, double clamp) {
    using acc_t = at::opmath_type<scalar_t>;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)blockDim.x * gridDim.x) {
        acc_t v = (acc_t)x[i] + (acc_t)b[(i / inner) % channels];
        if (act == 1) v = v > 0 ? v : (acc_t)0;
        else if (act == 2) v = v > 0 ? v : v * (acc_t)alpha;
        v *= (acc_t)gain;
        if (clamp >= 0) { v = v > (acc_t)clamp ? (acc_t)clamp : v; v = v < -(acc_t)clamp ? -(acc_t)clamp : v; }
        y[i] = (scalar_t)v;
    }
}

template <typename scalar_t>
__global__ void bias_act_grad_kernel(const scalar_t* __restrict__ dy, const scalar_t* __restrict__ y,
                                     scalar_t* __restrict__ dx, int64_t n, int act, double alpha, double gain,
                                     double clamp) {
    using acc_t = at::opmath_type<scalar_t>;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)blockDim.x * gridDim.x) {
        acc_t yi = (acc_t)y[i];
        acc_t slope = (acc_t)gain;
        if (act == 1 && !(yi > 0)) slope = 0;
        else if (act == 2 && !(yi > 0)) slope *= (acc_t)alpha;
        if (clamp >= 0 && (yi >= (acc_t)clamp || yi <= -(acc_t)clamp)) slope = 0;  // clamped outputs pass no gradient
        dx[i] = (scalar_t)((acc_t)dy[i] * slope);
    }
}

static dim3 grid_for(int64_t n) {
    int64_t blocks = (n + 255) / 256;
    return dim3((unsigned)std::min<int64_t>(std::max<int64_t>(blocks, 1), 65535 * 8));
}

torch::Tensor bias_act_fwd_cuda(torch::Tensor x, torch::Tensor b, int64_t inner, int64_t act, double alpha,
                                double gain, double clamp) {
    const at::cuda::OptionalCUDAGuard guard(x.device());
    auto y = torch::empty_like(x);
    int64_t n = x.numel();
    if (n == 0) return y;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::ScalarType::Half, at::ScalarType::BFloat16, x.scalar_type(), "bias_act_fwd", [&] {
        bias_act_fwd_kernel<scalar_t><<<grid_for(n), 256, 0, c10::cuda::getCurrentCUDAStream()>>>(
            x.data_ptr<scalar_t>(), b.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), n, inner, b.size(0), (int)act,
            alpha, gain, clamp);
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return y;
}

torch::Tensor bias_act_grad_cuda(torch::Tensor dy, torch::Tensor y, int64_t act, double alpha, double gain,
                                 double clamp) {
    const at::cuda::OptionalCUDAGuard guard(dy.device());
    auto dx = torch::empty_like(dy);
    int64_t n = dy.numel();
    if (n == 0) return dx;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::ScalarType::Half, at::ScalarType::BFloat16, dy.scalar_type(), "bias_act_grad", [&] {
        bias_act_grad_kernel<scalar_t><<<grid_for(n), 256, 0, c10::cuda::getCurrentCUDAStream()>>>(
            dy.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), dx.data_ptr<scalar_t>(), n, (int)act, alpha, gain,
            clamp);
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return dx;
}
