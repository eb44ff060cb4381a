// CUDA kernel for upfirdn2d: one thread per output pixel, looping only over the filter taps that hit a
// non-zero (non-inserted) input sample. Accumulates in float (or double for double inputs).
#include <torch/extension.h>
#include <c10/cuda/CUDAStream.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAGuard.h>

// Smallest k >= 0 with (base + k) divisible by up, where base may be negative.
__device__ __forceinline__ int first_tap(int base, int up) {
    int r = base % up;
    if (r < 0) r += up;
    return r == 0 ? 0 : up - r;
}

template <typename scalar_t>
__global__ void upfirdn2d_kernel(const scalar_t* __restrict__ x, const float* __restrict__ w,
                                 scalar_t* __restrict__ y, int64_t planes, int H, int W, int out_h, int out_w,
                                 int fh, int fw, int upx, int upy, int downx, int downy, int px0, int py0) {
    using acc_t = at::opmath_type<scalar_t>;
    const int64_t total = planes * out_h * out_w;
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < total; i += (int64_t)blockDim.x * gridDim.x) {
        const int ox = (int)(i % out_w);
        const int oy = (int)((i / out_w) % out_h);
        const int64_t plane = i / ((int64_t)out_w * out_h);
        const scalar_t* xp = x + plane * (int64_t)H * W;
        // padded-upsampled coordinate of tap k is oy * downy + k; its upsampled index is that minus py0
        const int by = oy * downy - py0;
        const int bx = ox * downx - px0;
        acc_t acc = 0;
        for (int ky = first_tap(by, upy); ky < fh; ky += upy) {
            const int iy = (by + ky) / upy;
            if (by + ky < 0 || iy >= H) continue;
            for (int kx = first_tap(bx, upx); kx < fw; kx += upx) {
                const int ix = (bx + kx) / upx;
                if (bx + kx < 0 || ix >= W) continue;
                acc += (acc_t)xp[(int64_t)iy * W + ix] * (acc_t)w[ky * fw + kx];
            }
        }
        y[i] = (scalar_t)acc;
    }
}

torch::Tensor upfirdn2d_cuda(torch::Tensor x, torch::Tensor w, int upx, int upy, int downx, int downy, int px0,
                             int px1, int py0, int py1) {
    const at::cuda::OptionalCUDAGuard guard(x.device());
    const int B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
    const int fh = w.size(0), fw = w.size(1);
    const int out_h = (H * upy + py0 + py1 - fh) / downy + 1;
    const int out_w = (W * upx + px0 + px1 - fw) / downx + 1;
    auto y = torch::empty({B, C, out_h, out_w}, x.options());
    const int64_t total = (int64_t)B * C * out_h * out_w;
    if (total == 0) return y;
    const int64_t blocks = std::min<int64_t>((total + 255) / 256, 65535 * 8);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::ScalarType::Half, at::ScalarType::BFloat16, x.scalar_type(), "upfirdn2d", [&] {
        upfirdn2d_kernel<scalar_t><<<(unsigned)blocks, 256, 0, c10::cuda::getCurrentCUDAStream()>>>(
            x.data_ptr<scalar_t>(), w.data_ptr<float>(), y.data_ptr<scalar_t>(), (int64_t)B * C, H, W, out_h, out_w,
            fh, fw, upx, upy, downx, downy, px0, py0);
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return y;
}
