"""PhiloxGenerator: a counter-based generator whose state lives on the device."""
from __future__ import annotations

import numbers

import torch

SEEDS = 2**64  # seeds are 64-bit: 0 <= seed < 2**64
# The largest offset a state may be restored at: 2**62 counters short of the int64 wrap, which
# no run draws (the CPU ops refuse the wrap itself, philox.advance_ and csrc; GPU ops do not
# read the offset back).
OFFSET_LIMIT = 2**62


def _seed(seed) -> int:
    """seed as an int in [0, 2**64); TypeError for non-integers (bool too), ValueError outside."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an int in [0, 2**64), got {type(seed).__name__}")
    if not 0 <= seed < SEEDS:
        raise ValueError(f"seed must be in [0, 2**64) (a 64-bit seed), got {seed}; larger or negative "
                         f"seeds would silently equal another one")
    return int(seed)


class PhiloxGenerator:
    """Philox4x32-10 state ``(seed, offset)`` kept in an int64 tensor on ``device``.

    ``state`` has three int64 entries: ``[seed, offset, done]``. Kernels read seed and
    offset and advance the offset on the device by the number of counters they drew
    (``done`` counts finished blocks of the current launch and is 0 between launches),
    so no call synchronises with the host and a captured CUDA graph draws fresh noise on
    every replay. Reading :attr:`offset` does synchronise; it is for checkpoints and tests.
    """

    def __init__(self, seed: int = 0, device: torch.device | str | None = None):
        seed = _seed(seed)
        dev = torch.device(device) if device is not None else torch.device("cpu")
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={device!r}: no CUDA GPU is available to this process "
                             f"(torch.cuda.is_available() is False); use device='cpu'")
        if dev.type == "cuda" and dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
        self.state = torch.zeros(3, dtype=torch.int64, device=dev)
        self.manual_seed(seed)

    @property
    def device(self) -> torch.device:
        return self.state.device

    @property
    def seed(self) -> int:
        return int(self.state[0].item()) & 0xFFFFFFFFFFFFFFFF

    @property
    def offset(self) -> int:
        return int(self.state[1].item())

    def manual_seed(self, seed: int) -> "PhiloxGenerator":
        """Set the 64-bit seed (an int in [0, 2**64)) and reset the offset to 0."""
        seed = _seed(seed)
        signed = seed - (1 << 64) if seed >= 1 << 63 else seed
        self.state.copy_(torch.tensor([signed, 0, 0], dtype=torch.int64))
        return self

    def seed_from_torch_(self) -> "PhiloxGenerator":
        """Draw a fresh 64-bit seed from torch's default generator of this device (the CPU's
        ``torch.default_generator``, or the CUDA device's), reset the offset to 0. Returns self.

        What the samplers and attacks do once per call when given no generator, so that
        ``torch.manual_seed(s)`` before a call repeats its noise. Device ops only (one
        ``torch.randint`` and two writes into ``state``): no host read, and capturable in a
        CUDA graph, where torch's CUDA generator gives every replay a fresh seed.
        """
        seed = torch.randint(-2**63, 2**63 - 1, (1,), dtype=torch.int64, device=self.state.device)
        self.state[:1].copy_(seed)
        self.state[1:].zero_()
        return self

    def get_state(self) -> torch.Tensor:
        """A CPU copy of ``[seed, offset, 0]``, for checkpoints."""
        return self.state.detach().cpu().clone()

    def set_state(self, state: torch.Tensor) -> None:
        """Restore a state from :meth:`get_state` (its offset in [0, 2**62])."""
        if not isinstance(state, torch.Tensor) or state.dtype != torch.int64 or state.shape != (3,):
            raise ValueError("state must be an int64 tensor of shape (3,) from get_state()")
        offset = int(state[1])  # a host read: restoring a checkpoint, not a hot path
        if not 0 <= offset <= OFFSET_LIMIT:
            raise ValueError(f"state's offset (state[1]) must be in [0, 2**62], got {offset}; "
                             f"pass a state from get_state()")
        self.state.copy_(state)
        self.state[2] = 0

    def state_dict(self) -> dict:
        return {"state": self.get_state()}

    def load_state_dict(self, sd: dict) -> None:
        self.set_state(sd["state"])

    def __repr__(self) -> str:
        return f"PhiloxGenerator(device={self.device})"


_default: dict[torch.device, PhiloxGenerator] = {}


def default_generator(device: torch.device) -> PhiloxGenerator:
    """The per-device generator a fused op (``ebjdat.ops.*``) uses when it gets
    ``generator=None``.

    Created on first use with a seed drawn from torch's global CPU generator, then advanced
    by every op that draws from it: an op call does not reseed it (that would cost a draw
    per call), so ``torch.manual_seed`` before an op call repeats its noise only in a process
    whose first such call follows it. The samplers and attacks do not use it: with
    ``generator=None`` they reseed a generator of their own from torch's generator once per
    call (``per_call``), so ``torch.manual_seed(s)`` before a call repeats that call.
    """
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    gen = _default.get(device)
    if gen is None:
        seed = int(torch.randint(0, 2**62, (), dtype=torch.int64).item())
        gen = _default[device] = PhiloxGenerator(seed, device)
    return gen


def per_call(cache: dict, device: torch.device) -> PhiloxGenerator:
    """The generator of one sampler or attack call made without a generator: ``cache``'s
    generator for ``device`` (created once, so a captured CUDA graph keeps reading the same
    state tensor), freshly seeded from torch's default generator of the device
    (:meth:`PhiloxGenerator.seed_from_torch_`). ``torch.manual_seed(s)`` seeds the CPU's
    and every CUDA device's generator, so it repeats the call's noise on either."""
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    gen = cache.get(device)
    if gen is None:
        gen = cache[device] = PhiloxGenerator(0, device)
    return gen.seed_from_torch_()
