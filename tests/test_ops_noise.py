"""The Philox stream and the normals it feeds: known answers, statistics, reproducibility,
and the same noise in every backend."""
import math

import pytest
import torch

from ebjdat import ops
from ebjdat.ops import philox

from .conftest import require_backend

# Random123's known-answer vectors for Philox4x32-10: (key, counter, output)
KAT = [
    ((0, 0), (0, 0, 0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 2, (0xFFFFFFFF,) * 4, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0xA4093822, 0x299F31D0), (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


def draw(n, seed=0, offset=0, backend="torch", noise_std=1.0):
    """n normals via sgld_step_ on zeros with step 0: x = 0 + 0 * g + 1 * z = z exactly."""
    gen = ops.PhiloxGenerator(seed)
    gen.state[1] = offset
    x = torch.zeros(n)
    with ops.use_backend(backend):
        ops.sgld_step_(x, torch.zeros(n), step_size=0.0, noise_std=noise_std, generator=gen)
    return x, gen


@pytest.mark.parametrize("key,ctr,out", KAT)
def test_philox_known_answers(key, ctr, out):
    words = philox.philox4x32_10(*(torch.tensor(v) for v in key + ctr))
    assert tuple(int(w) for w in words) == out


def test_philox_counter_layout():
    """counter c -> words (c lo, c hi, 0, 0), key (seed lo, seed hi)."""
    seed, c = 0x0123456789ABCDEF, (5 << 32) + 17
    got = philox.philox4x32(torch.tensor(seed), torch.tensor([c]))
    want = philox.philox4x32_10(*(torch.tensor(v) for v in (seed & 0xFFFFFFFF, seed >> 32, 17, 5, 0, 0)))
    assert [int(w) for w in got] == [int(w) for w in want]


def test_cuda_host_philox_matches():
    require_backend("cuda")
    from ebjdat import _C
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        seed = int(torch.randint(0, 2**62, (), generator=g)) * 3  # may exceed 2**63
        c = int(torch.randint(0, 2**62, (), generator=g))
        signed = seed - 2**64 if seed >= 2**63 else seed
        want = philox.philox4x32(torch.tensor(signed), torch.tensor([c]))
        assert tuple(_C.philox4x32_host(seed, c)) == tuple(int(w) for w in want)


def test_uniform_is_exact_and_open():
    r = torch.tensor([0, 511, 2**32 - 1, 2**31])
    u = philox.uniform(r)
    assert u[0] == u[1] == 2.0**-24 and u[2] == 1 - 2.0**-24 and u[3] == 0.5 + 2.0**-24
    assert ((u > 0) & (u < 1)).all()


def test_normal_statistics():
    n = 1 << 20
    z, _ = draw(n, seed=2024)
    z = z.double()
    se = 1 / math.sqrt(n)
    assert abs(z.mean()) < 5 * se
    assert abs(z.std() - 1) < 5 * se * math.sqrt(0.5)
    for k in (1.0, 2.0, 3.0):  # two-sided tails against the exact normal probabilities
        p = math.erfc(k / math.sqrt(2))
        assert abs((z.abs() > k).double().mean() - p) < 5 * math.sqrt(p * (1 - p) / n)
    assert z.abs().max() <= math.sqrt(-2 * math.log(2.0**-24)) + 1e-5  # bounded by design
    # Kolmogorov-Smirnov distance to N(0, 1); the 0.1% critical value is 1.95 / sqrt(n)
    zs, _ = z.sort()
    cdf = 0.5 * torch.erfc(-zs / math.sqrt(2))
    i = torch.arange(1, n + 1, dtype=torch.float64)
    ks = torch.maximum(i / n - cdf, cdf - (i - 1) / n).max()
    assert ks < 1.95 * se


def test_consecutive_calls_are_independent():
    n = 1 << 16
    gen = ops.PhiloxGenerator(7)
    a, b = torch.zeros(n), torch.zeros(n)
    ops.sgld_step_(a, torch.zeros(n), step_size=0.0, noise_std=1.0, generator=gen)
    ops.sgld_step_(b, torch.zeros(n), step_size=0.0, noise_std=1.0, generator=gen)
    assert gen.offset == 2 * n // 4   # ceil(n / 4) counters a call
    corr = torch.corrcoef(torch.stack([a, b]).double())[0, 1]
    assert abs(corr) < 5 / math.sqrt(n)
    # the second call continues the stream exactly where the first stopped (same backend:
    # auto's on the CPU; across backends the normals agree within NOISE_ATOL)
    both, _ = draw(2 * n, seed=7, backend=ops.backends.auto_choice("cpu")[0])
    assert torch.equal(torch.cat([a, b]), both)


def test_same_seed_same_noise_other_seed_other_noise():
    a, _ = draw(1000, seed=5)
    b, _ = draw(1000, seed=5)
    c, _ = draw(1000, seed=6)
    assert torch.equal(a, b)
    assert (a != c).float().mean() > 0.99


def test_manual_seed_and_state_roundtrip():
    gen = ops.PhiloxGenerator(11)
    x = torch.zeros(10)
    ops.sgld_step_(x, x.clone(), step_size=0.0, noise_std=1.0, generator=gen)
    saved = gen.get_state()
    y1 = torch.zeros(10)
    ops.sgld_step_(y1, y1.clone(), step_size=0.0, noise_std=1.0, generator=gen)
    gen.set_state(saved)
    y2 = torch.zeros(10)
    ops.sgld_step_(y2, y2.clone(), step_size=0.0, noise_std=1.0, generator=gen)
    assert torch.equal(y1, y2)
    assert gen.manual_seed(11).offset == 0 and gen.seed == 11
    big = ops.PhiloxGenerator(2**64 - 1)
    assert big.seed == 2**64 - 1


def test_default_generator_follows_torch_manual_seed():
    from ebjdat.ops import generator as G
    G._default.clear()
    torch.manual_seed(0)
    a = ops.sgld_step_(torch.zeros(8), torch.zeros(8), step_size=0.0, noise_std=1.0)
    G._default.clear()
    torch.manual_seed(0)
    b = ops.sgld_step_(torch.zeros(8), torch.zeros(8), step_size=0.0, noise_std=1.0)
    assert torch.equal(a, b)


@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_noise_identical_across_backends(backend):
    """Same integer stream; normals within NOISE_ATOL (log/cos differ by an ulp or two).
    A seed >= 2**63 and an offset >= 2**32 exercise every key and counter word."""
    require_backend(backend)
    n, seed, offset = 3000, 2**63 + 12345, 2**32 - 1000
    ref, g_ref = draw(n, seed, offset, "torch")
    got, g_got = draw(n, seed, offset, backend)
    assert (got - ref).abs().max() <= philox.NOISE_ATOL
    assert g_got.offset == g_ref.offset == offset + philox.counters_for(n)


def test_triton_programs_stride_over_blocks(monkeypatch):
    """A noisy Triton launch runs fewer programs than blocks (a few per SM), each taking
    blocks p, p + P, ...: with 3 programs over 6 blocks (and a tail) the noise and the
    generator's advance are those of the spec, for sgld_step_ and the linf random start,
    in logical order and channels_last."""
    require_backend("triton")
    from ebjdat.ops import triton_launch
    monkeypatch.setattr(triton_launch, "grid", lambda x, n, block, noisy: (3,) if noisy else (-(-n // block),))
    n = 5 * 512 + 300
    ref, g_ref = draw(n, 7, 11, "torch")
    got, g_got = draw(n, 7, 11, "triton")
    assert (got - ref).abs().max() <= philox.NOISE_ATOL
    assert g_got.offset == g_ref.offset == 11 + philox.counters_for(n)
    xo = torch.rand(6, 3, 16, 16).contiguous(memory_format=torch.channels_last)   # 9 blocks of 512
    out = {}
    for backend in ("torch", "triton"):
        gen = ops.PhiloxGenerator(3)
        x = torch.empty_like(xo)
        with ops.use_backend(backend):
            ops.pgd_init_(x, xo, eps=0.1, generator=gen)
            ops.sgld_step_(x, torch.ones_like(x), step_size=0.0, noise_std=0.5, generator=gen)
        out[backend] = (x, gen.offset)
    assert out["torch"][1] == out["triton"][1] == 2 * philox.counters_for(xo.numel())
    assert (out["torch"][0] - out["triton"][0]).abs().max() <= 0.5 * philox.NOISE_ATOL + 1e-7


def test_one_philox_call_serves_four_elements():
    """Element i: output i % 4 of counter offset + i // 4; normals by Box-Muller on the word
    pairs (r0, r1) and (r2, r3), cos for the pair's first element, sin for its second."""
    seed, offset = 2**40 + 3, 17
    state = torch.tensor([seed, offset, 0])
    r = philox.philox4x32(state[0], torch.tensor([offset + 1]))     # elements 4..7
    u = [philox.uniform(w) for w in r]
    assert torch.equal(philox.uniforms(state, 7)[4:7], torch.cat(u)[:3])
    z = philox.normals(state, 8)[4:]
    for p in (0, 1):
        rho = torch.sqrt(-2.0 * torch.log(u[2 * p]))
        theta = (u[2 * p + 1] - 0.5) * philox.TWO_PI_F32
        assert torch.equal(z[2 * p], (rho * torch.cos(theta))[0])
        assert torch.equal(z[2 * p + 1], (rho * torch.sin(theta))[0])
    assert [philox.counters_for(n) for n in (0, 1, 4, 5, 8)] == [0, 1, 1, 2, 2]


def test_cos_and_sin_branches_are_uncorrelated():
    """The two normals of one word pair are independent N(0, 1) (Box-Muller): over 2**18
    pairs their correlation is within 4 standard errors of 0."""
    z = philox.normals(torch.tensor([5, 0, 0]), 1 << 20).double().reshape(-1, 2)
    corr = float(torch.corrcoef(z.T)[0, 1])
    assert abs(corr) < 4 / math.sqrt(z.shape[0])


def _count(done, offset, grid):
    from ebjdat import _C
    return _C.generator_count_host(done, offset, grid)


def test_generator_count_advances_once_at_the_last_block():
    """A launch of g blocks that overlaps no other: only its g-th finished block advances."""
    require_backend("cuda")
    done, offset = 0, 2**40 + 7
    for grid in (1, 2, 5, 132):
        seen = []
        for _ in range(grid):
            done, advance = _count(done, offset, grid)
            seen.append(advance)
        assert seen == [False] * (grid - 1) + [True] and done & 0xFFFFFFFF == 0
        offset += 1000


def test_generator_count_cannot_wedge_under_interleaved_launches():
    """Two launches sharing one generator (two streams) read the same offset and finish
    their blocks interleaved in any order, from any done-word (a stale one too): the
    offset moves, and every later launch again advances exactly once, at its last block,
    so no interleaving can leave the generator drawing the same noise forever."""
    require_backend("cuda")
    import random
    rng = random.Random(0)
    for _ in range(500):
        grids = {"A": rng.randint(1, 6), "B": rng.randint(1, 6)}
        done = rng.choice([0, (0x1234 << 32) | 3, (100 << 32) | 1])
        offset, read = 100, 100
        events = ["A"] * grids["A"] + ["B"] * grids["B"]
        rng.shuffle(events)
        for e in events:
            done, advance = _count(done, read, grids[e])
            if advance:
                offset = read + 50
        assert offset != read
        for grid in (7, 3, 1):   # a grid of 1 would hide a stale count: it comes last
            read, seen = offset, []
            for _ in range(grid):
                done, advance = _count(done, read, grid)
                seen.append(advance)
            assert seen == [False] * (grid - 1) + [True]
            offset = read + 50
