"""Custom ops for StyleGAN2: fused bias + activation and upfirdn2d (upsample, pad, FIR filter, downsample).

Each op has a CUDA kernel (``*.cu`` + ``*.cpp``, JIT-compiled at first use with ``torch.utils.cpp_extension.load``
and ninja) and a pure-PyTorch reference path. ``impl="auto"`` uses CUDA for CUDA tensors when the build works
and otherwise the reference path, with one warning per process (not one per call). Force a path with
``set_default_impl("ref")`` / ``"cuda"`` or per call with ``impl=``. Both paths support gradients of any order
(R1 and path-length regularisation differentiate through the backward pass).
"""

from gan.ops._plugin import get_default_impl, set_default_impl
from gan.ops.bias_act import bias_act
from gan.ops.upfirdn2d import downsample2d, filter2d, setup_filter, upfirdn2d, upsample2d

__all__ = ["bias_act", "downsample2d", "filter2d", "get_default_impl", "set_default_impl", "setup_filter",
           "upfirdn2d", "upsample2d"]
