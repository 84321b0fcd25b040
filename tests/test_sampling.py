"""Schedule values (ggdm.md §1.4), sampler equivalences, per-sample noise."""
import math

import pytest
import torch

from methods.sampling import NoiseStream, Sampler, Schedule, ddim_step, ddpm_step, sample_seeds


def test_cosine_schedule_matches_reference_values():
    s = Schedule(200)
    assert s.beta[0].item() == pytest.approx(2.55e-4, rel=0.01)
    assert s.beta[199].item() == pytest.approx(0.999)
    assert s.alpha_bar[0].item() == pytest.approx(0.99975, abs=1e-5)
    assert s.alpha_bar[199].item() == pytest.approx(6.1e-8, rel=0.05)
    for t, ref in [(50, 0.917), (100, 0.697), (150, 0.373)]:
        assert math.sqrt(s.abar(t)) == pytest.approx(ref, abs=2e-3)


def test_schedule_rejects_bad_T():
    with pytest.raises(ValueError, match="T must be"):
        Schedule(1)


def test_ddim_eta1_equals_ddpm_posterior():
    s = Schedule(50)
    g = torch.Generator().manual_seed(0)
    x, x0, z = (torch.randn(4, 8, generator=g) for _ in range(3))
    for t, tp in [(49, 48), (20, 10), (3, -1)]:
        ab = s.abar(t)
        eps = (x - math.sqrt(ab) * x0) / math.sqrt(1 - ab)
        a = ddpm_step(s, x, x0, t, tp, z)
        b = ddim_step(s, x, x0, eps, t, tp, 1.0, z)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_last_step_adds_no_noise():
    s = Schedule(20)
    x, x0 = torch.randn(3, 5), torch.randn(3, 5)
    out = ddpm_step(s, x, x0, 0, -1, torch.full((3, 5), 1e6))
    torch.testing.assert_close(out, x0)


def test_grid_is_strided_and_ends_at_clean():
    s = Schedule(100)
    g = Sampler("ddim", 0.0, 10).grid(s)
    assert len(g) == 10 and g[0][0] == 99 and g[-1] == (0, -1)
    assert all(t > tp for t, tp in g)
    assert len(Sampler().grid(s)) == 100


def test_noise_stream_is_batch_size_independent():
    seeds = sample_seeds(7, 3, 5)
    assert sample_seeds(7, 3, 2) == seeds[:2]
    big, small = NoiseStream(seeds, (4,), block=3), NoiseStream(seeds[:2], (4,), block=3)
    for _ in range(7):  # crosses block boundaries
        assert torch.equal(big()[:2], small())
    assert sample_seeds(7, 4, 1) != seeds[:1] and sample_seeds(8, 3, 1) != seeds[:1]


def test_sampler_rejects_bad_values():
    with pytest.raises(ValueError):
        Sampler("euler")
    with pytest.raises(ValueError):
        Sampler("ddim", eta=-1)


@pytest.mark.parametrize("shape", [(64,), (1, 28, 28), (3,), (1,), (7, 3)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_noise_blocks_sized_to_the_draws_continue_the_same_sequence(shape, dtype):
    """A stream sized to its draws gives the draws of the default 64-draw blocks (the reference), also past them."""
    for rows, draws in ((1, 1), (3, 17), (32, 33), (5, 201)):
        ref = NoiseStream(range(rows), shape, dtype=dtype)
        sized = NoiseStream(range(rows), shape, dtype=dtype, draws=draws)
        assert sized.block != ref.block or draws == 64
        for _ in range(draws + 70):
            assert torch.equal(sized(), ref())


def test_noise_blocks_sized_to_the_draws_respect_the_memory_cap():
    s = NoiseStream(range(2048), (64,), draws=201)  # 201 draws of 2048 x 64 numbers: 7 blocks under 2^22 numbers
    assert s.block * 2048 * 64 <= NoiseStream.MAX_BLOCK_NUMBERS and s.block * 7 >= 201 and s.block * 6 < 201
    assert NoiseStream(range(32), (64,), draws=33).block == 33
    assert NoiseStream(range(2), (3,), draws=33).block == 48  # 48 x 3 numbers: a multiple of 16


def test_sample_seeds_are_the_seed_sequence_of_seed_round_and_index():
    import numpy as np

    ref = [int(np.random.SeedSequence([4, 2, 10 + i]).generate_state(2, np.uint64)[0] >> 1) for i in range(6)]
    assert sample_seeds(4, 2, 6, offset=10) == ref
    assert sample_seeds(4, 2, 6, offset=10) == ref  # again, from the cache
    assert sample_seeds(4, 3, 6, offset=10) != ref
