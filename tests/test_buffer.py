"""The replay buffer's slice sampling: trajectories drawn uniformly, then a start inside each; the ring."""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict

from agent.data.buffer import ReplayBuffer
from agent.data.rows import choose, scatter
from agent.data.tails import TailStore
from tests.conftest import same_batches


def steps(start: int, n: int, episode: int) -> TensorDict:
    """``n`` transitions numbered ``start..`` (``observation``), ``next`` numbered one on."""
    t = torch.arange(start, start + n).float()[:, None]
    ep = torch.full((n,), episode)
    return TensorDict({"observation": t, "action": t, "episode": ep, "next": {"observation": t + 1, "reward": t, "episode": ep}}, [n])


def buffer_of(lengths: list[int], capacity: int = 1000, horizon: int = 3, batch: int = 4, one_at_a_time: bool = False) -> ReplayBuffer:
    buf = ReplayBuffer(capacity, horizon, batch, "episode", step_keys=("reward", "episode"))
    start = 0
    for episode, n in enumerate(lengths):
        parts = [steps(start + i, 1, episode) for i in range(n)] if one_at_a_time else [steps(start, n, episode)]
        for part in parts:
            buf.extend(part)
        start += n
    return buf


@pytest.mark.parametrize("one_at_a_time", [False, True])
def test_trajectories_are_drawn_uniformly_then_a_start_inside(one_at_a_time):
    """Episodes of 2, 5 and 10 steps, horizon 3: the 2-step one never, the others half the time each
    (whatever their length, as TD-MPC2's sampler), each start equally often; an online run stores one
    step at a time and keeps its episodes whole."""
    buf = buffer_of([2, 5, 10], batch=20_000, one_at_a_time=one_at_a_time)
    torch.manual_seed(0)
    first = buf.slices()[0]  # [B] slots of the slices' first steps (not wrapped: slot = step number)
    assert ((first >= 2) & (first <= 4)).logical_or((first >= 7) & (first <= 14)).all()
    starts = torch.bincount(first, minlength=17).float() / len(first)
    assert abs(starts[2:5].sum() - 0.5) < 0.02
    torch.testing.assert_close(starts[2:5], torch.full((3,), 0.5 / 3), atol=0.01, rtol=0)
    torch.testing.assert_close(starts[7:15], torch.full((8,), 0.5 / 8), atol=0.01, rtol=0)
    batch = buf.sample()
    assert batch["obs"].shape == (4, 20_000, 1) and batch["action"].shape == (3, 20_000, 1)
    assert (batch["obs"][1:] - batch["obs"][:-1] == 1).all() and (batch["episode"] == batch["episode"][0]).all()


def test_the_ring_drops_what_it_overwrote():
    buf = buffer_of([6, 9], capacity=10, horizon=2, batch=2000)  # 15 writes: steps 5..14 remain
    assert len(buf) == 10 and [int(x) for x in buf.stored()["observation"]] == list(range(5, 15))
    torch.manual_seed(0)
    batch = buf.sample()
    assert (batch["episode"] == 1).all()  # episode 0 kept one step: shorter than the horizon
    assert batch["obs"].min() == 6 and batch["obs"].max() == 15  # every slice of episode 1 (slots wrap)
    assert (batch["obs"][1:] - batch["obs"][:-1] == 1).all()
    buf.extend(steps(15, 25, 2))  # more than the capacity at once: the newest 10
    assert [int(x) for x in buf.stored()["observation"]] == list(range(30, 40))
    assert (buf.sample()["episode"] == 2).all()


def test_a_trajectory_needs_the_horizon_and_keys_stay_apart():
    buf = buffer_of([2, 2], horizon=3)
    with pytest.raises(RuntimeError, match="no trajectory of at least horizon=3"):
        buf.slices()
    with pytest.raises(RuntimeError, match="empty"):
        ReplayBuffer(10, 2, 4, "episode").sample()
    with pytest.raises(ValueError, match="capacity, horizon and batch_size must be >= 1"):
        ReplayBuffer(0, 2, 4, "episode")
    buf = buffer_of([3, 3], horizon=2, batch=500)  # same length: the boundary between 0 and 1 never crossed
    assert (buf.sample()["episode"].diff(dim=0) == 0).all()


def test_unbatched_single_and_env_major_writes_store_the_same_ring():
    """The online job writes one unbatched transition per step, the representation job ``[envs, T]``
    batches (env-major): both land in the ring as one flat ``[N]`` write would, wrapping included."""
    flat = steps(0, 14, 0)
    flat["episode"] = flat["next", "episode"] = torch.arange(14) // 7  # episodes 0 and 1
    bulk, single, grid = (ReplayBuffer(10, 2, 4, "episode", step_keys=("reward",)) for _ in range(3))
    bulk.extend(flat)
    for i in range(14):
        single.extend(flat[i])  # batch_size [] (an env without a batch)
    grid.extend(flat[:12].reshape(2, 6))  # [envs, T], env-major
    grid.extend(flat[12:])
    for buf in (single, grid):
        assert buf.written == bulk.written == 14 and (buf.stored() == bulk.stored()).all()
        assert torch.equal(buf.segments.start, bulk.segments.start) and torch.equal(buf.segments.length, bulk.segments.length)
    assert [int(x) for x in single.stored()["observation"]] == list(range(4, 14))


def test_only_the_keys_batches_read_are_stored_and_a_missing_one_is_named():
    buf = ReplayBuffer(3, 1, 4, "episode", obs_keys=("count",), step_keys=("reward",))  # full after the first write
    data = steps(0, 3, 0)
    data["count"], data["next", "count"], data["junk"] = torch.ones(3), torch.ones(3), torch.ones(3)
    buf.extend(data)
    keys = {k if isinstance(k, str) else tuple(k) for k in buf.stored().keys(True, True)}
    assert keys == {"observation", "action", "episode", "count", ("next", "observation"), ("next", "count"), ("next", "reward")}
    assert set(buf.sample()) == {"obs", "action", "count", "reward"}
    before = buf.stored()
    with pytest.raises(KeyError, match=r"stores \['count', \('next', 'count'\)\]"):
        buf.extend(steps(3, 1, 0))  # a later write without a stored key: refused before it overwrites anything
    assert buf.written == 3 and (buf.stored() == before).all()
    with pytest.raises(KeyError, match=r"needs \['count', \('next', 'count'\)\]"):
        ReplayBuffer(10, 1, 4, "episode", obs_keys=("count",)).extend(steps(0, 1, 0))


# rows of each kind the word-wide copies handle differently: 8-, 4-, 2-byte words, bytes, bool, wider elements
ROW_KINDS = pytest.mark.parametrize(
    ("dtype", "shape"),
    [(torch.uint8, (3, 8, 8)), (torch.uint8, (12,)), (torch.uint8, (6,)), (torch.uint8, (3,)), (torch.bool, (8,)),
     (torch.float32, (3,)), (torch.int64, ()), (torch.float16, (2, 3))],
    ids=["frames-int64-words", "int32-words", "int16-words", "bytes", "bool", "float32-rows", "int64-column", "float16"],
)  # fmt: skip


def episodes_stream(n: int, seed: int = 0, first: int | None = None) -> TensorDict:
    """``n`` transitions of episodes 1-6 steps long (the first ``first`` long if given): observation ``[3]`` and
    ``count`` numbered by step; the next ones are the following step's inside an episode, and a terminal frame
    of their own at its end."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 7, (n,), generator=g)
    if first is not None:
        lengths[0] = first
    episode = torch.repeat_interleave(torch.arange(n), lengths)[:n]
    i = torch.arange(n)
    last = torch.ones(n, dtype=torch.bool)
    last[:-1] = episode[1:] != episode[:-1]
    nxt = torch.where(last, 1000 + i, i + 1)
    obs = {"observation": i[:, None].float().expand(n, 3), "count": i}
    return TensorDict(
        {**obs, "action": i[:, None].float(), "episode": episode,
         "next": {"observation": nxt[:, None].float().expand(n, 3), "count": nxt, "reward": i.float(), "episode": episode}},
        [n],
    )  # fmt: skip


@pytest.mark.parametrize("mode", ["flat", "env-major", "one-at-a-time"])
@pytest.mark.parametrize("least", [1024, 1], ids=["tails-fifo-whole-ring", "tails-fifo-growing"])
def test_obs_once_stores_each_frame_once_and_gives_the_same_batches(mode, least, monkeypatch):
    """Writes that wrap the ring, episodes ending inside and across writes, one larger than the ring: the
    rebuilt next observations and every batch equal the buffer that stores both, and only trajectory ends
    keep a next observation of their own, in a store that grows to the tails alive (moving its rows: the
    first write, inside one long episode, has few tails)."""
    monkeypatch.setattr(TailStore, "LEAST", least)
    resize, resizes = TailStore._resize, []
    monkeypatch.setattr(TailStore, "_resize", lambda store, *a: resizes.append(store.size) or resize(store, *a))
    data = episodes_stream(150, first=60)
    plain, once = (ReplayBuffer(40, 2, 64, "episode", obs_keys=("count",), step_keys=("reward",), obs_once=o) for o in (False, True))
    sizes = {"flat": [7, 1, 13, 45, 3, 30, 51], "env-major": [8, 12, 44, 36, 50], "one-at-a-time": [1] * 150}[mode]
    start = 0
    for k, size in enumerate(sizes):
        part = data[start : start + size]
        if mode == "env-major" and size % 4 == 0:
            part = part.reshape(4, size // 4)
        start += size
        assert plain.extend(part) == once.extend(part) == size
        assert plain.written == once.written and (plain.stored() == once.stored()).all()
        if any(plain.segments.length >= 2):
            assert same_batches(plain, once, seed=k)
    assert start == 150
    tails = once.tails
    stored = once.stored()
    ends = stored["next", "count"] >= 1000
    assert tails < len(once)
    if mode == "one-at-a-time":  # online-style writes: a tail is freed when the next write goes on with its episode
        assert tails == int(ends.sum()) + (0 if ends[-1] else 1)
    assert (once._tails.at[(torch.arange(len(once)) + once.written) % 40][ends] >= 0).all()  # every episode end is a tail
    assert int((once._tails.at >= 0).sum()) == tails and once._tails.size <= 40
    if least == 1 and mode != "one-at-a-time":
        assert once._tails.size < 40 and len(resizes) >= 2 and resizes[1] > 0  # grew, moving rows, below the ring
    if mode == "one-at-a-time":
        assert resizes == [0] and once._tails.size == 40  # every transition a tail: the whole ring at once


def test_obs_once_refuses_data_whose_next_observation_is_not_the_following_one():
    data = episodes_stream(20)
    data["episode"] = data["next", "episode"] = torch.zeros(20, dtype=torch.long)  # one trajectory with terminal frames inside
    buf = ReplayBuffer(40, 1, 4, "episode", obs_keys=("count",), obs_once=True)
    with pytest.raises(ValueError, match="next 'observation' differs from the following transition's"):
        buf.extend(data)
    assert len(buf) == 0 and buf._store is None  # nothing stored
    buf.extend(episodes_stream(20))
    assert len(buf) == 20 and (buf.stored() == episodes_stream(20).select(*buf.stored().keys(True, True))).all()


@ROW_KINDS
def test_scatter_writes_what_index_copy_writes(dtype, shape):
    """The obs_once tails' scatter, row by row as machine words where the rows allow: the same bytes as
    ``index_copy_``, from a non-contiguous source of another dtype too (cast as ``copy_`` would)."""
    g, top = torch.Generator().manual_seed(0), 2 if dtype is torch.bool else 100
    base = torch.randint(0, top, (40, *shape), generator=g).to(dtype)
    src = torch.randint(0, top, (*shape, 6), generator=g).float().movedim(-1, 0)  # float, non-contiguous
    idx = torch.randperm(30, generator=g)[:6]
    got, want = base.clone(), base.clone()
    scatter(got[10:], idx, src)  # into a view that starts inside its storage
    want[10:].index_copy_(0, idx, src.to(dtype))
    assert torch.equal(got, want) and not torch.equal(got, base)  # (nothing outside the rows written changed)
    with pytest.raises(ValueError, match="scatter writes 6 rows"):
        scatter(got, idx, src[:, None])


@ROW_KINDS
def test_choose_picks_rows_as_torch_where_does(dtype, shape):
    g, top = torch.Generator().manual_seed(1), 2 if dtype is torch.bool else 100
    a, b = (torch.randint(0, top, (9, *shape), generator=g).to(dtype) for _ in range(2))
    mask = torch.tensor([True, False, False, True, True, False, True, False, False])
    want = torch.where(mask.reshape(-1, *(1,) * len(shape)), a, b)
    assert torch.equal(choose(mask, a, b), want) and not torch.equal(want, a) and not torch.equal(want, b)
    out = torch.zeros(20, *shape, dtype=dtype)
    choose(mask, a, b, out=out[4:13])  # into a view inside a larger tensor
    assert torch.equal(out[4:13], want) and not out[:4].any() and not out[13:].any()
    odd = torch.zeros(9 * a[0].numel() + 1, dtype=dtype)[1:].view(9, *shape)  # not aligned to a word: bytes
    assert torch.equal(choose(mask, a, b, out=odd), want)
    with pytest.raises(ValueError, match="one dtype and shape"):
        choose(mask, a, b.double())


def test_obs_once_refuses_a_next_observation_of_another_dtype():
    data = episodes_stream(20)
    data["next", "count"] = data["next", "count"].float()  # one ring holds both: it would be cast
    buf = ReplayBuffer(40, 1, 4, "episode", obs_keys=("count",), obs_once=True)
    with pytest.raises(ValueError, match="obs_once stores 'count' and its next one in one ring"):
        buf.extend(data)
    buf.extend(episodes_stream(20))
    with pytest.raises(ValueError, match=r"\('next', 'count'\) torch.float32 \(stored torch.int64\)"):
        buf.extend(data)
    assert buf.written == 20


def test_a_later_write_of_other_shapes_is_refused_before_anything_is_written():
    for once in (False, True):
        buf = ReplayBuffer(40, 1, 4, "episode", obs_keys=("count",), obs_once=once)
        buf.extend(episodes_stream(20))
        before, tails = buf.stored(), buf.tails
        bad = episodes_stream(10)
        bad["next", "observation"] = torch.zeros(10, 4)
        with pytest.raises(ValueError, match=r"\('next', 'observation'\) \(4,\) \(stored \(3,\)\)"):
            buf.extend(bad)
        assert buf.written == 20 and buf.tails == tails and (buf.stored() == before).all()


def test_the_tail_store_keeps_each_live_tail_through_drops_and_growth(monkeypatch):
    """Tails alive in a 20-slot ring: few per write for two laps (the store's head moves on), then every
    transition a tail (it grows while its rows wrap), then few again. Each slot of the ring reads its own
    tail, and no other slot reads one."""
    monkeypatch.setattr(TailStore, "LEAST", 1)
    store, written, tail_of = TailStore(20, torch.device("cpu")), 0, {}
    plan = [(10, [9])] * 4 + [(7, [3, 6])] + [(10, list(range(10)))] * 3 + [(6, [5])] * 5
    sizes = []
    for m, ends in plan:
        owners = written + torch.tensor(ends)
        store.write(owners, {"x": owners.float()[:, None]}, written % 20, m)
        for w in range(written, written + m):
            tail_of[w % 20] = w if w - written in ends else None
        written += m
        sizes.append(store.size)
        slots = torch.arange(20)
        ring = torch.full((20, 1), -1.0)  # a slot that is no tail reads the ring's next slot: -1
        got = store.next_rows("x", ring, slots)[:, 0].tolist()
        assert got == [float(tail_of[s]) if tail_of.get(s) is not None else -1.0 for s in range(20)]
        assert len(store) == sum(v is not None for v in tail_of.values())
    assert sizes[3] < sizes[7] <= 20  # it grew after the ring had gone round (its head not at its start)


def test_obs_once_refuses_a_write_that_goes_on_with_a_trajectory_from_another_frame():
    """Across writes the premise is checked at the first write that goes on with a stored trajectory."""
    data = episodes_stream(30, first=30)  # one episode
    buf = ReplayBuffer(40, 1, 4, "episode", obs_keys=("count",), obs_once=True)
    buf.extend(data[:10])
    bad = data[10:20].clone()
    bad["observation"][0] += 1  # not the next observation stored for step 9
    with pytest.raises(ValueError, match="this write's first 'observation' differs from the next one stored"):
        buf.extend(bad)
    assert buf.written == 10 and buf.tails == 1
    buf.extend(data[10:20])  # the real continuation: its tail replaces the last one
    assert buf.written == 20 and buf.tails == 1 and (buf.stored() == data[:20].select(*buf.stored().keys(True, True))).all()
