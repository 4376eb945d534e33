"""Random inputs of odd shapes, dtypes and layouts, with NaN and Inf sprinkled in."""
import torch

SHAPES = [(1,), (7,), (3, 5, 7), (4, 3, 17, 19), (33, 3, 8, 8)]
DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]
LAYOUTS = ["contiguous", "channels_last", "strided"]
GAP = 7.0  # the untouched elements between a strided view's own


def gaps_untouched(x: torch.Tensor) -> bool:
    """For a "strided" view, the elements of its buffer it does not own still hold GAP."""
    if x._base is None or x.is_contiguous():
        return True
    return bool((x._base[..., 1::2] == GAP).all())


def cases():
    """(shape, layout) pairs: channels_last only for 4-D shapes."""
    return [(s, lay) for s in SHAPES for lay in LAYOUTS if lay != "channels_last" or len(s) == 4]


def make(shape, dtype, layout="contiguous", *, seed=0, scale=1.0, special=False):
    """A tensor of ``shape`` in ``layout``: "contiguous", "channels_last" (4-D) or
    "strided" (a non-dense view: every other element of a larger buffer)."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(shape, generator=g, dtype=torch.float64) * scale
    if special and v.numel() >= 4:
        flat = v.view(-1)
        idx = torch.randperm(flat.numel(), generator=g)[:4]
        flat[idx] = torch.tensor([float("nan"), float("inf"), float("-inf"), 0.0], dtype=torch.float64)
    v = v.to(dtype)
    if layout == "channels_last":
        return v.contiguous(memory_format=torch.channels_last)
    if layout == "strided":
        big = torch.full(shape[:-1] + (2 * shape[-1],), GAP, dtype=dtype)
        view = big[..., ::2]
        view.copy_(v)
        return view
    return v.contiguous()
