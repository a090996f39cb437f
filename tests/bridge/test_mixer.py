import numpy as np
import pytest

from bridge.mixer import FRAME_SAMPLES, SILENCE_DBFS, JitterBuffer, Mixer, dbfs, seq_diff

T = np.arange(FRAME_SAMPLES) / 48000


def sine(freq, amp):
    return np.round(amp * np.sin(2 * np.pi * freq * T)).astype(np.int16)


def test_two_sines_sum():
    m = Mixer()
    a, b = sine(440, 8000), sine(1000, 6000)
    m.add_speaker("a")
    m.add_speaker("b")
    m.push("a", 0, a)
    m.push("b", 0, b)
    r = m.tick()
    assert np.array_equal(r.mix, a.astype(np.int32) + b)
    assert r.active == {"a", "b"}


def test_mix_minus_excludes_self():
    m = Mixer()
    a, b, c = sine(300, 5000), sine(700, 5000), sine(1100, 5000)
    for key, sig in (("a", a), ("b", b), ("c", c)):
        m.add_speaker(key)
        m.push(key, 0, sig)
    r = m.tick()
    assert np.array_equal(r.minus["a"], b.astype(np.int32) + c)
    assert np.array_equal(r.minus["b"], a.astype(np.int32) + c)
    assert np.array_equal(r.minus["c"], a.astype(np.int32) + b)


def test_lone_speaker_hears_silence_and_silent_speaker_hears_all():
    m = Mixer()
    a = sine(440, 8000)
    m.add_speaker("a")
    m.add_speaker("quiet")
    m.push("a", 0, a)
    r = m.tick()
    assert not r.minus["a"].any()
    assert np.array_equal(r.minus["quiet"], a)
    assert r.levels["quiet"] == SILENCE_DBFS


def test_sum_clips_to_int16():
    m = Mixer()
    loud = np.full(FRAME_SAMPLES, 30000, dtype=np.int16)
    for key in "ab":
        m.add_speaker(key)
        m.push(key, 0, loud)
        m.push(key, 1, -loud)
    r = m.tick()
    assert r.mix.dtype == np.int16
    assert (r.mix == 32767).all()
    r = m.tick()
    assert (r.mix == -32768).all()


def test_missing_frame_is_silence():
    m = Mixer()
    m.add_speaker("a")
    r = m.tick()
    assert r.mix.shape == (FRAME_SAMPLES,) and not r.mix.any()
    assert r.active == frozenset()


def test_levels_are_dbfs():
    full = sine(1000, 32767)
    assert dbfs(full) == pytest.approx(-3.01, abs=0.05)
    assert dbfs(np.zeros(FRAME_SAMPLES, dtype=np.int16)) == SILENCE_DBFS
    m = Mixer()
    m.add_speaker("a")
    m.push("a", 0, sine(1000, 3277))
    assert m.tick().levels["a"] == pytest.approx(-23.0, abs=0.1)


def test_removed_speaker_is_cut_on_next_tick():
    m = Mixer()
    m.add_speaker("a")
    for seq in range(3):
        m.push("a", seq, sine(440, 8000))
    assert m.tick().mix.any()
    m.remove_speaker("a")
    assert not m.push("a", 3, sine(440, 8000))
    assert not m.tick().mix.any()


def test_one_frame_per_speaker_per_tick():
    m = Mixer(jitter_capacity=8)
    m.add_speaker("a")
    frames = [np.full(FRAME_SAMPLES, v, dtype=np.int16) for v in (1, 2, 3)]
    for i, f in enumerate(frames):
        m.push("a", i, f)
    assert [int(m.tick().mix[0]) for _ in range(4)] == [1, 2, 3, 0]


def test_jitter_buffer_reorders():
    jb = JitterBuffer(capacity=4)
    for seq in (10, 12, 11):
        assert jb.push(seq, seq)
    assert [jb.pop(), jb.pop(), jb.pop(), jb.pop()] == [10, 11, 12, None]


def test_jitter_buffer_drops_late_and_duplicate():
    jb = JitterBuffer(capacity=4)
    assert jb.push(5, "a")
    assert not jb.push(5, "dup")
    assert jb.pop() == "a"
    assert not jb.push(4, "late")
    assert not jb.push(5, "late again")
    assert jb.stats.late == 2 and jb.stats.duplicate == 1
    assert jb.pop() is None


def test_jitter_buffer_skips_gap_when_later_frame_waits():
    jb = JitterBuffer(capacity=4)
    jb.push(1, "one")
    jb.push(3, "three")
    assert [jb.pop(), jb.pop(), jb.pop()] == ["one", None, "three"]
    assert jb.stats.missing == 1


def test_jitter_buffer_is_bounded():
    jb = JitterBuffer(capacity=3)
    for seq in range(6):
        jb.push(seq, seq)
    assert len(jb) == 3
    assert jb.stats.overflow == 3
    assert [jb.pop() for _ in range(3)] == [3, 4, 5]


def test_jitter_buffer_prefill():
    jb = JitterBuffer(capacity=4, prefill=2)
    jb.push(0, "a")
    assert jb.pop() is None
    jb.push(1, "b")
    assert [jb.pop(), jb.pop()] == ["a", "b"]


def test_sequence_wraps_around():
    assert seq_diff(0, 0xFFFFFFFF) == 1
    jb = JitterBuffer(capacity=4)
    jb.push(0xFFFFFFFF, "last")
    jb.push(0, "first")
    assert [jb.pop(), jb.pop()] == ["last", "first"]


def test_jump_far_ahead_resyncs():
    jb = JitterBuffer(capacity=4)
    jb.push(1, "old")
    assert jb.pop() == "old"
    assert jb.push(100000, "new stream")
    assert jb.pop() == "new stream"


def test_pcm_shape_is_checked():
    m = Mixer()
    m.add_speaker("a")
    with pytest.raises(ValueError):
        m.push("a", 0, np.zeros(100, dtype=np.int16))


def test_jitter_buffer_sheds_standing_delay():
    jb = JitterBuffer(capacity=4, shrink_after=10)
    seq = 0
    for _ in range(2):  # a hiccup left two frames queued
        jb.push(seq, seq)
        seq += 1
    played = []
    for _ in range(12):  # then one frame per tick arrives, one is played
        jb.push(seq, seq)
        seq += 1
        played.append(jb.pop())
    assert jb.stats.shrunk == 1
    assert len(jb) == 1  # one frame of standing delay removed
    assert played == sorted(played) and len(set(played)) == len(played)


def test_jitter_buffer_keeps_delay_when_it_runs_dry():
    jb = JitterBuffer(capacity=4, shrink_after=5)
    for seq in range(20):
        jb.push(seq, seq)
        assert jb.pop() == seq
    assert jb.stats.shrunk == 0
