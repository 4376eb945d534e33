"""Argument checks shared by every op: raise before anything is written."""
from __future__ import annotations

import math
import numbers

import torch

from .generator import PhiloxGenerator
from .registry import Like, Mask, PerSample

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
NORMS = ("linf", "l2")


def tensor(name: str, t, like: torch.Tensor | None = None, same_dtype: bool = False, like_name: str = "x") -> None:
    """t must be a float tensor (fp32/fp16/bf16/fp64); with ``like`` (called like_name in
    the messages), of its shape and device."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float32, float16, bfloat16 or float64, got {t.dtype}")
    if like is None:
        return
    if t.shape != like.shape:
        raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {tuple(like.shape)} (the shape of {like_name})")
    if t.device != like.device:
        raise ValueError(f"{name} is on {t.device}, expected {like.device} (the device of {like_name})")
    if same_dtype and t.dtype != like.dtype:
        raise TypeError(f"{name} has dtype {t.dtype}, expected {like.dtype} (the dtype of {like_name})")


def writable(name: str, t: torch.Tensor) -> None:
    """An in-place target must not overlap itself (e.g. an expanded view), nor be part of
    an autograd graph while grad mode is on (``no_autograd``), nor be an inference tensor
    outside inference mode (``not_inference``)."""
    if not t.requires_grad and t.is_contiguous() and (torch.compiler.is_compiling() or not t.is_inference()):
        return   # the common case
    if torch.compiler.is_compiling():  # not traceable; eager calls catch the mistake
        return
    not_inference(name, t)
    no_autograd(name, t)
    if not t.is_contiguous() and t.numel() > 1 and torch._debug_has_internal_overlap(t) == 1:
        raise ValueError(f"{name} has overlapping memory (an expanded view?); pass a tensor that owns its elements")


def not_inference(name: str, t: torch.Tensor) -> None:
    """An inference tensor (made under ``torch.inference_mode()``) may be updated in place
    only inside inference mode, as torch's own in-place ops allow (RuntimeError, torch's
    words): every backend refuses it alike. Not traceable (torch.compile does not trace
    inference tensors): eager calls check."""
    if torch.compiler.is_compiling():
        return
    if t.is_inference() and not torch.is_inference_mode_enabled():
        raise RuntimeError(f"Inplace update to inference tensor outside InferenceMode is not allowed: {name} "
                           f"was made under torch.inference_mode(); update it inside inference mode, or pass "
                           f"{name}.clone() made outside it")


def no_autograd(name: str, t: torch.Tensor) -> None:
    """With grad mode on, an in-place target must not require grad: the ops have no
    autograd formula. A leaf is refused as torch refuses in-place ops on it (RuntimeError,
    torch's words), on every backend alike; a non-leaf too, since its recorded history
    would no longer describe its values (gradients through it would be silently wrong).
    Under torch.no_grad() both are legal, as in torch."""
    if not (t.requires_grad and torch.is_grad_enabled()):
        return
    fix = f"pass {name}.detach() (the ops are not differentiable) or call the op under torch.no_grad()"
    if t.is_leaf:
        raise RuntimeError(f"a leaf Variable that requires grad is being used in an in-place operation: "
                           f"{name} requires grad; {fix}")
    raise RuntimeError(f"{name} requires grad (it is computed from tensors that do) and the ops update it "
                       f"in place without an autograd formula; {fix}")


def number(name: str, v, *, nonneg: bool = True, allow_none: bool = False) -> float | None:
    """A finite real number (non-negative unless nonneg=False); None passes when allowed."""
    if type(v) is float and v == v and v not in _INFS and (v >= 0 or not nonneg):
        return v   # the common case, without the numbers.Real ABC check (a microsecond a call)
    if v is None and allow_none:
        return None
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(v).__name__}")
    v = float(v)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    if nonneg and v < 0:
        raise ValueError(f"{name} must be >= 0, got {v}")
    return v


_INFS = (math.inf, -math.inf)
NO_CLAMP = (-math.inf, math.inf)  # (lo, hi) of no clamp


def clamp_range(v) -> tuple[float, float]:
    """None, or a (lo, hi) pair with lo <= hi (either may be +-inf); returns floats."""
    if v is None:
        return NO_CLAMP
    if type(v) is tuple and len(v) == 2 and type(v[0]) is float and type(v[1]) is float and v[0] <= v[1]:
        return v   # the common case, without the numbers.Real ABC checks (NaN fails <=)
    if not isinstance(v, (tuple, list)) or len(v) != 2:
        raise TypeError(f"clamp must be None or a (lo, hi) pair, got {v!r}")
    lo, hi = v
    for side, b in (("clamp[0]", lo), ("clamp[1]", hi)):
        if isinstance(b, bool) or not isinstance(b, numbers.Real) or math.isnan(b):
            raise TypeError(f"{side} must be a real number, got {b!r}")
    lo, hi = float(lo), float(hi)
    if lo > hi:
        raise ValueError(f"clamp range is empty: lo={lo} > hi={hi}")
    return lo, hi


def norm(v, x: torch.Tensor | None = None, x_name: str = "x") -> str:
    """One of NORMS; with x, the tensor it applies to: l2 norms are per sample (dim 0)."""
    if v not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {v!r}")
    if v == "l2" and x is not None and x.dim() == 0:
        raise ValueError(f"{x_name} must have a batch dimension (dim 0) for norm='l2'")
    return v


def per_sample(name: str, t, x: torch.Tensor, like: torch.Tensor | None = None, x_name: str = "x") -> None:
    """t must be a (B,) float tensor on x's device, B = x.shape[0] (of like's dtype when
    given: an op's per-sample tensors share one dtype)."""
    tensor(name, t)
    if x.dim() == 0:
        raise ValueError(f"{name} is per sample: {x_name} must have a batch dimension (dim 0)")
    if t.shape != x.shape[:1]:
        raise ValueError(f"{name} has shape {tuple(t.shape)}, expected ({x.shape[0]},) (one value per sample "
                         f"of {x_name})")
    if t.device != x.device:
        raise ValueError(f"{name} is on {t.device}, expected {x.device} (the device of {x_name})")
    if like is not None and t.dtype != like.dtype:
        raise TypeError(f"{name} has dtype {t.dtype}, expected {like.dtype} (the per-sample tensors share one dtype)")


def mask(name: str, t, x: torch.Tensor, written: bool = True, x_name: str = "x") -> None:
    """t must be a (B,) bool tensor on x's device, B = x.shape[0]; ``written``: one an op
    writes (``writable``)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype != torch.bool:
        raise TypeError(f"{name} must be a bool tensor, got {t.dtype}")
    if x.dim() == 0 or t.shape != x.shape[:1]:
        raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {tuple(x.shape[:1])} (one value per "
                         f"sample of {x_name})")
    if t.device != x.device:
        raise ValueError(f"{name} is on {t.device}, expected {x.device} (the device of {x_name})")
    if written:
        writable(name, t)
    else:
        not_inference(name, t)


def generator_state(t, x: torch.Tensor, x_name: str = "x") -> None:
    """A generator state for x: an int64 tensor [seed, offset, done] on x's device, which
    the op advances in place."""
    if not isinstance(t, torch.Tensor) or t.dtype != torch.int64 or t.shape != (3,):
        raise ValueError("state must be an int64 tensor of shape (3,): a PhiloxGenerator's state")
    if t.device != x.device:
        raise ValueError(f"state is on {t.device}, expected {x.device} (the device of {x_name})")
    not_inference("the generator state", t)


def op_tensors(op, values: tuple, state=None, written: bool = True) -> None:
    """The precise checks of an op's tensors (``registry.Op.tensors``, in order), raising
    with the argument's name; the generated ops call this only when their one-expression
    common case fails. ``written``: the tensors the op writes may not overlap themselves
    nor record autograd history (the public ops); ``state``: checked when given (the
    dispatcher's entry)."""
    x, xn, first = values[0], op.target.name, None
    tensor(xn, x)
    if written:
        writable(xn, x)
    else:
        not_inference(xn, x)
    for a, t in zip(op.tensors[1:], values[1:]):
        if isinstance(a, Like):
            tensor(a.name, t, like=x, same_dtype=a.same_dtype, like_name=xn)
        elif isinstance(a, PerSample):
            per_sample(a.name, t, x, first, xn)
            first = t if first is None else first
        elif isinstance(a, Mask):
            mask(a.name, t, x, written, xn)
    if state is not None:
        generator_state(state, x, xn)


def generator(g, x: torch.Tensor) -> None:
    if g is None:
        return
    if not isinstance(g, PhiloxGenerator):
        raise TypeError(f"generator must be an ebjdat.ops.PhiloxGenerator, got {type(g).__name__}")
    if g.device != x.device:
        raise ValueError(f"generator is on {g.device} but x is on {x.device}; "
                         f"create it with PhiloxGenerator(seed, device=x.device)")
    not_inference("the generator's state", g.state)


def memory_format(v):
    """A torch.memory_format for 4-D tensors (contiguous_format or channels_last), or None."""
    if v is None or v in (torch.contiguous_format, torch.channels_last):
        return v
    raise ValueError(f"memory_format must be torch.contiguous_format, torch.channels_last or None, got {v!r}")
