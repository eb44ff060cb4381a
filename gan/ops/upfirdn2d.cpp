// Host side of upfirdn2d: argument checks and the Python binding. Kernels live in upfirdn2d.cu.
#include <torch/extension.h>

torch::Tensor upfirdn2d_cuda(torch::Tensor x, torch::Tensor w, int upx, int upy, int downx, int downy, int px0,
                             int px1, int py0, int py1);

static torch::Tensor upfirdn2d(torch::Tensor x, torch::Tensor w, int64_t upx, int64_t upy, int64_t downx,
                               int64_t downy, int64_t px0, int64_t px1, int64_t py0, int64_t py1) {
    TORCH_CHECK(x.is_cuda() && w.is_cuda(), "upfirdn2d: tensors must be on a CUDA device");
    TORCH_CHECK(x.dim() == 4 && x.is_contiguous(), "upfirdn2d: x must be a contiguous [B, C, H, W] tensor");
    TORCH_CHECK(w.dim() == 2 && w.is_contiguous() && w.scalar_type() == torch::kFloat,
                "upfirdn2d: w must be a contiguous float32 [fh, fw] tensor");
    TORCH_CHECK(upx >= 1 && upy >= 1 && downx >= 1 && downy >= 1, "upfirdn2d: up and down must be >= 1");
    int64_t out_h = (x.size(2) * upy + py0 + py1 - w.size(0)) / downy + 1;
    int64_t out_w = (x.size(3) * upx + px0 + px1 - w.size(1)) / downx + 1;
    TORCH_CHECK(out_h >= 1 && out_w >= 1, "upfirdn2d: output would be empty");
    return upfirdn2d_cuda(x, w, upx, upy, downx, downy, px0, px1, py0, py1);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
    m.def("upfirdn2d", &upfirdn2d, "upsample, pad, FIR filter (correlation with w), downsample");
}
