"""Training windows: layout against the source, one window per trajectory, exact resumption."""

from __future__ import annotations

import io
import itertools

import pytest
import torch
from torch import Tensor

from diffbench.engine.windows import WindowSampler

N, T, H, W = 11, 9, 3, 2


@pytest.fixture
def data() -> Tensor:
    """Trajectories whose every value encodes (trajectory n, time t, channel c): 100n + 10t + c."""
    n, t, c = torch.meshgrid(torch.arange(N), torch.arange(T), torch.arange(2), indexing="ij")
    code = (100 * n + 10 * t + c).float()
    return code[..., None, None].expand(N, T, 2, H, W).contiguous()


def _decode(batch: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(trajectory, time, channel) of every channel of every sample, from pixel (0, 0)."""
    code = batch[:, :, 0, 0].long()
    return code // 100, code // 10 % 10, code % 10


def test_shapes_and_time_major_layout(data: Tensor) -> None:
    sampler = WindowSampler(data, 4, window=5, seed=0)
    batches = list(sampler)
    assert sampler.epoch_steps == 3 == len(batches)
    assert (sampler.epoch, sampler.step) == (1, 0)
    assert [b.shape for b in batches] == [(4, 10, H, W)] * 2 + [(3, 10, H, W)]
    for batch in batches:
        assert torch.equal(batch, batch[:, :, :1, :1].expand_as(batch))
        trajectory, time, channel = _decode(batch)
        assert (trajectory == trajectory[:, :1]).all()  # one trajectory per sample
        assert torch.equal(channel, torch.arange(10).expand_as(channel) % 2)  # u, v, u, v, …
        steps = time[:, ::2]
        assert torch.equal(time[:, 1::2], steps)  # u and v of a state share its time
        assert torch.equal(steps - steps[:, :1], torch.arange(5).expand_as(steps))
        assert ((steps[:, 0] >= 0) & (steps[:, -1] < T)).all()
        n, t0 = trajectory[:, 0], steps[:, 0]
        source = data[n[:, None], t0[:, None] + torch.arange(5)]  # (B, 5, 2, H, W)
        assert torch.equal(batch, source.reshape(len(n), 10, H, W))


def test_every_trajectory_once_per_epoch(data: Tensor) -> None:
    sampler = WindowSampler(data, 4, seed=1)
    starts = set()
    for epoch in range(20):
        assert sampler.epoch == epoch
        batches = list(sampler)
        trajectory, time, _ = _decode(torch.cat(batches))
        assert sorted(trajectory[:, 0].tolist()) == list(range(N))
        starts.update(time[:, 0].tolist())
    assert starts == set(range(T - 5 + 1))  # every window start is reachable


def test_order_and_windows_change_between_epochs(data: Tensor) -> None:
    sampler = WindowSampler(data, N, seed=2)
    first, second = next(iter(sampler)), next(iter(sampler))
    assert not torch.equal(first, second)


def test_determinism_by_seed(data: Tensor) -> None:
    def draws(seed: int) -> list[Tensor]:
        sampler = WindowSampler(data, 4, seed=seed)
        return [batch for _ in range(3) for batch in sampler]

    same = zip(draws(7), draws(7), strict=True)
    assert all(torch.equal(a, b) for a, b in same)
    assert not all(torch.equal(a, b) for a, b in zip(draws(7), draws(8), strict=True))


@pytest.mark.parametrize("consumed", [0, 1, 3, 4, 7])
def test_restored_state_yields_the_remaining_batches(data: Tensor, consumed: int) -> None:
    original = WindowSampler(data, 4, seed=3)
    stream = itertools.chain.from_iterable(original for _ in range(4))
    for _ in range(consumed):
        next(stream)
    buffer = io.BytesIO()
    torch.save(original.state_dict(), buffer)  # as a checkpoint would
    expected = list(itertools.islice(stream, 5))

    restored = WindowSampler(data, 4, seed=99)
    buffer.seek(0)
    restored.load_state_dict(torch.load(buffer))
    actual = list(itertools.islice(itertools.chain.from_iterable(restored for _ in range(4)), 5))
    assert all(torch.equal(a, b) for a, b in zip(expected, actual, strict=True))


def test_state_of_other_data_is_refused(data: Tensor) -> None:
    state = WindowSampler(data, 4).state_dict()
    with pytest.raises(ValueError, match="batch_size=4"):
        WindowSampler(data, 5).load_state_dict(state)


def test_paper_epoch_is_26_steps() -> None:
    assert WindowSampler(torch.zeros(819, 64, 2, 1, 1), 32).epoch_steps == 26


def test_rejects_bad_shapes(data: Tensor) -> None:
    with pytest.raises(ValueError, match=r"\(N, T, 2, H, W\)"):
        WindowSampler(data[:, :, :1], 4)
    with pytest.raises(ValueError, match="window 10"):
        WindowSampler(data, 4, window=10)
