"""Per-dtype tolerances, written once: (rtol, atol) against a float64 evaluation."""
import torch

from ebjdat.ops.philox import NOISE_ATOL

# elementwise ops: fp32 math, one rounding to the dtype (RNE: 2**-24, 2**-11, 2**-8)
TOL = {
    torch.float64: (1e-12, 1e-12),
    torch.float32: (1e-6, 1e-5),
    torch.float16: (1e-3, 1e-5),
    torch.bfloat16: (8e-3, 1e-5),
}
# per-sample L2 norms add reduction-order rounding (sum over up to ~1000 elements)
TOL_REDUCE = {
    torch.float64: (1e-10, 1e-10),
    torch.float32: (2e-5, 2e-5),
    torch.float16: (1e-3, 1e-4),
    torch.bfloat16: (8e-3, 1e-4),
}


def noise_tol(dtype: torch.dtype, noise_std: float) -> tuple[float, float]:
    """Two backends' noisy results differ by at most NOISE_ATOL * noise_std before rounding."""
    rtol, atol = TOL[dtype]
    return rtol, atol + NOISE_ATOL * noise_std


def assert_close(actual, expected, tol, msg=""):
    rtol, atol = tol
    torch.testing.assert_close(actual.double(), expected.double(), rtol=rtol, atol=atol,
                               equal_nan=True, msg=lambda m: f"{msg}\n{m}")


def assert_bitwise(actual, expected, msg=""):
    """Equal bits (NaN == NaN): the deterministic ops agree exactly across backends."""
    torch.testing.assert_close(actual, expected, rtol=0, atol=0, equal_nan=True,
                               msg=lambda m: f"{msg}\n{m}")
