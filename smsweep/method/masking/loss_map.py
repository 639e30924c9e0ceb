"""The per-pixel loss selective masking ranks patches by: (1 - SSIM 3x3) + L1, within each patch.

A pixel's SSIM window is its 3x3 neighbourhood cut to the pixels of its own patch (9 inside a
patch, 6 along a patch edge, 4 in a corner), with means, variances and covariance normalised by
that count. A patch's loss then depends on its own pixels only: a patch at the image border is
treated like one in the interior, and visible (well reconstructed) neighbours do not lower the
loss along the edges of a masked patch. Full 3x3 windows did both: they reached into the
visible neighbours everywhere but at the image border (reflect padding), so border patches
looked harder and were masked more often (0.56 against 0.45 in the interior, on noise with an
identity model). The L1 term is per pixel, hence local already.

`pixel_loss_map` is written for eager execution (in place, few buffers: on a CPU it runs on
cache-sized groups of variants). `patch_mean_losses` is the same map, averaged per patch, in
plain out-of-place operations, so that `torch.compile` traces it whole and fuses its ~30
elementwise passes into a few kernels; `compiled_patch_mean_losses` compiles it once per process.
The two agree to float32 rounding (tests/masking/test_masking_loss_map.py).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

SSIM_C1 = 0.01**2  # (K1 * data_range)^2 with data_range 1
SSIM_C2 = 0.03**2


def pixel_loss_map(
    reconstruction: Tensor,
    target: Tensor,
    ssim_weight: float = 1.0,
    l1_weight: float = 1.0,
    *,
    patch_size: int | None = None,
) -> Tensor:
    """ssim_weight * (1 - SSIM) + l1_weight * |x_hat - x|, averaged over channels: (n, H, W).

    reconstruction, target: (n, C, H, W). SSIM windows stay inside each patch_size x patch_size
    patch; None: inside the image (the whole image is one patch).
    """
    ssim = ssim_map(reconstruction, target, patch_size)
    loss = (reconstruction - target).abs_().mul_(l1_weight)  # in place: one buffer for the sum
    return loss.sub_(ssim, alpha=ssim_weight).add_(ssim_weight).mean(dim=1)


def ssim_map(x: Tensor, y: Tensor, patch_size: int | None = None) -> Tensor:
    """Per-pixel SSIM, 3x3 uniform window cut to the pixel's patch, data range 1: (n, C, H, W).

    Written with window sums S = count * mean (the constants scaled to match), so no pass
    divides by the count; the usual form is in `smsweep.method.masking.reference`. Terms are built
    in place where a temporary can be reused: fewer allocations and passes over memory.
    """
    (sum_x, sum_y, sum_xx, sum_yy, sum_xy), count = window_sums(x, y, patch_size)
    c1, c2 = count * count * SSIM_C1, count * count * SSIM_C2  # (H, W)
    product = sum_x * sum_y
    squares = sum_x.square().add_(sum_y.square())  # unfused: = sum_xx + sum_yy for 1-px windows
    covariance = (sum_xy * count).sub_(product)  # count² · cov
    variances = (sum_xx + sum_yy).mul_(count).sub_(squares)  # count² · (var_x + var_y)
    numerator = (2 * product + c1).mul_(covariance.mul_(2).add_(c2))
    denominator = (squares + c1).mul_(variances.add_(c2))
    return numerator.div_(denominator)


def window_sums(
    x: Tensor, y: Tensor, patch_size: int | None = None
) -> tuple[tuple[Tensor, ...], Tensor]:
    """Sums of x, y, x², y² and xy over each pixel's 3x3 neighbourhood within its patch: five
    (n, C, H, W) tensors, and the number of pixels summed at each position, (H, W).

    The five maps share one buffer and one separable pass (a row sum, then a column sum), in
    which each neighbour slice is weighted by 1 where it lies in the pixel's patch and 0 where
    it does not: no padding, no copy into patches. A non-finite value still reaches the next
    patch's edge (0 * nan is nan).
    """
    n, channels, height, width = x.shape
    patch_height, patch_width = (height, width) if patch_size is None else (patch_size,) * 2
    stats = x.new_empty(n, 5, channels, height, width)
    stats[:, 0], stats[:, 1] = x, y
    torch.mul(x, x, out=stats[:, 2])
    torch.mul(y, y, out=stats[:, 3])
    torch.mul(x, y, out=stats[:, 4])
    rows, row_count = _sum_within_patches(stats, patch_width, dim=-1)
    sums, col_count = _sum_within_patches(rows, patch_height, dim=-2)
    return sums.unbind(1), col_count[:, None] * row_count[None, :]


def _sum_within_patches(values: Tensor, patch: int, dim: int) -> tuple[Tensor, Tensor]:
    """Each value plus its neighbours on either side along `dim` (-1: in the row, -2: in the
    column) that lie in its patch: same shape as `values`; and how many values each sum holds,
    (length of dim,), in `values`' dtype."""
    length = values.shape[dim]
    position = torch.arange(length - 1, device=values.device)
    same = (position // patch == (position + 1) // patch).to(values.dtype)  # i, i+1 one patch
    weight = same if dim == -1 else same[:, None]
    before, after = values.narrow(dim, 0, length - 1), values.narrow(dim, 1, length - 1)
    total = torch.empty_like(values)
    # written out of place rather than into a copy of `values`: one pass less
    torch.addcmul(after, before, weight, out=total.narrow(dim, 1, length - 1))  # + the one before
    total.narrow(dim, 0, 1).copy_(values.narrow(dim, 0, 1))
    total.narrow(dim, 0, length - 1).addcmul_(after, weight)  # + the one after
    count = torch.ones(length, dtype=values.dtype, device=values.device)
    count[1:] += same
    count[:-1] += same
    return total, count


def patch_mean_losses(
    reconstruction: Tensor,
    target: Tensor,
    ssim_weight: float = 1.0,
    l1_weight: float = 1.0,
    *,
    patch_size: int,
) -> Tensor:
    """`pixel_loss_map` averaged over each patch_size x patch_size patch: (n, H/p, W/p), in
    out-of-place operations only (what `torch.compile` fuses; slower than `pixel_loss_map` in
    eager mode)."""
    x, y = reconstruction, target
    sums = [_window_sum(values, patch_size) for values in (x, y, x * x, y * y, x * y)]
    sum_x, sum_y, sum_xx, sum_yy, sum_xy = (total for total, _ in sums)
    count = sums[0][1]  # (H, W)
    c1, c2 = count * count * SSIM_C1, count * count * SSIM_C2
    product = sum_x * sum_y
    squares = sum_x.square() + sum_y.square()
    covariance = sum_xy * count - product  # count² · cov
    variances = (sum_xx + sum_yy) * count - squares  # count² · (var_x + var_y)
    ssim = (2 * product + c1) * (2 * covariance + c2) / ((squares + c1) * (variances + c2))
    loss = ((x - y).abs() * l1_weight - ssim * ssim_weight + ssim_weight).mean(dim=1)  # (n, H, W)
    return F.avg_pool2d(loss.unsqueeze(1), patch_size).squeeze(1)


@functools.cache
def compiled_patch_mean_losses() -> Callable[..., Tensor]:
    """`patch_mean_losses` through `torch.compile`, made once per process. Each new input shape
    compiles on its first call (a second batch size makes the batch dimension dynamic, so the
    last, smaller chunk of a scoring call costs one more compile, once)."""
    return torch.compile(patch_mean_losses)


def _window_sum(values: Tensor, patch: int) -> tuple[Tensor, Tensor]:
    """`window_sums` for one map, out of place: the 3x3 sums within patches, (n, C, H, W), and
    the number of pixels in each, (H, W)."""
    rows, row_count = _neighbour_sum(values, patch, dim=-1)
    total, col_count = _neighbour_sum(rows, patch, dim=-2)
    return total, col_count[:, None] * row_count[None, :]


def _neighbour_sum(values: Tensor, patch: int, dim: int) -> tuple[Tensor, Tensor]:
    """`_sum_within_patches` with padding instead of writes into slices."""
    length = values.shape[dim]
    position = torch.arange(length - 1, device=values.device)
    same = (position // patch == (position + 1) // patch).to(values.dtype)  # i, i+1 one patch
    weight = same if dim == -1 else same[:, None]
    at_start = (1, 0) if dim == -1 else (0, 0, 1, 0)  # F.pad's (left, right, top, bottom)
    at_end = (0, 1) if dim == -1 else (0, 0, 0, 1)
    from_before = F.pad(values.narrow(dim, 0, length - 1) * weight, at_start)  # i gets i - 1
    from_after = F.pad(values.narrow(dim, 1, length - 1) * weight, at_end)  # i gets i + 1
    count = 1 + F.pad(same, (1, 0)) + F.pad(same, (0, 1))
    return values + from_before + from_after, count
