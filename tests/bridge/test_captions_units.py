"""Captions' pure parts: VAD, resampler, WebVTT, engine checks, settings."""

from __future__ import annotations

import numpy as np
import pytest

from bridge.captions import CaptionsError, check_engine
from bridge.captions.resample import Downsampler
from bridge.captions.vad import Continue, End, SpeakerVad, Start, VadConfig
from bridge.captions.webvtt import Cue, render, timestamp
from bridge.mixer import SILENCE_DBFS, dbfs
from bridge.settings import SettingsError, load_settings

from .conftest import SECRET, sine
from .test_captions import parse_vtt


def test_vad_ignores_silence_and_frames_one_utterance():
    cfg = VadConfig(start_frames=3, hangover_frames=5, preroll_frames=4)
    vad = SpeakerVad(cfg)
    quiet = np.zeros(960, np.int16)
    loud = sine(300, 0.02)
    assert all(vad.step(t, quiet, dbfs(quiet)) is None for t in range(1, 100))
    assert all(vad.step(t, None, SILENCE_DBFS) is None for t in range(100, 110))
    actions = [vad.step(t, loud, dbfs(loud)) for t in range(110, 120)]
    assert actions[:2] == [None, None] and isinstance(actions[2], Start)
    assert len(actions[2].frames) == 4  # pre-roll, ending with the frame that started it
    assert vad.started_tick == 110
    assert all(isinstance(a, Continue) for a in actions[3:])
    tail = [vad.step(t, quiet, dbfs(quiet)) for t in range(120, 126)]
    assert all(isinstance(a, Continue) for a in tail[:4]) and isinstance(tail[4], End)
    assert tail[5] is None and vad.last_voiced_tick == 119


def test_vad_cuts_long_utterances():
    vad = SpeakerVad(VadConfig(start_frames=1, max_frames=10, preroll_frames=1))
    loud = sine(300, 0.02)
    kinds = [type(vad.step(t, loud, dbfs(loud))).__name__ for t in range(1, 13)]
    assert kinds[0] == "Start" and kinds[9] == "End" and kinds[10] == "Start"


def test_downsampler_keeps_speech_band_and_removes_what_would_alias():
    tone = sine(1000, 1.0)
    down = Downsampler()
    out = np.concatenate([down(tone[i:i + 960]) for i in range(0, len(tone), 960)])
    assert len(out) == 16000
    expected = np.sin(2 * np.pi * 1000 * np.arange(16000) / 16000)
    corr = max(np.corrcoef(out[200 + lag:15000 + lag], expected[200:15000])[0, 1]
               for lag in range(40))
    assert corr > 0.99
    assert np.abs(out[200:]).max() > 7000
    high = Downsampler()(sine(12000, 0.5))  # would fold to 4 kHz without the filter
    assert np.abs(high[100:]).max() < 100


def test_webvtt_cues_are_ordered_escaped_and_timed():
    text = render([Cue(65.5, 70.25, "@bob:x", "second <b> & more"),
                   Cue(1.0, 1.1, "@alice:x", "first"),
                   Cue(3.0, 4.0, "@alice:x", "  ")], title="My space")
    cues = parse_vtt(text)
    assert text.startswith("WEBVTT - My space\n\n")
    assert [c[2] for c in cues] == ["<v @alice:x>first",
                                    "<v @bob:x>second &lt;b&gt; &amp; more"]
    assert cues[0][:2] == (1.0, 1.5)  # shown at least half a second
    assert "00:01:05.500 --> 00:01:10.250" in text
    assert timestamp(3725.0004) == "01:02:05.000"


@pytest.mark.parametrize("engine,model,language,message", [
    ("kaldi", "", "en", "not one of"),
    ("vosk", "", "en", "model_path: required"),
    ("vosk", "/", "en", "pip install vosk"),
    ("faster-whisper", "", "en", "pip install faster-whisper"),
    ("pocketsphinx", "/no/such/folder", "en", "is not a folder"),
    ("pocketsphinx", "", "de", "US English only"),
])
def test_engine_checks_name_the_setting(engine, model, language, message):
    with pytest.raises(CaptionsError, match=message):
        check_engine(engine, model, language)


def test_pocketsphinx_model_folder_must_hold_a_model(tmp_path):
    from bridge.captions import load_engine

    with pytest.raises(CaptionsError, match="no an acoustic model"):
        load_engine("pocketsphinx", str(tmp_path))


def test_settings_read_the_shared_captions_section(tmp_path):
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[bridge]\nshared_secret = "{SECRET}"\n'
                   '[spaces]\ncaptions_by_default = true\n'
                   '[captions]\nengine = "pocketsphinx"\nmodel_path = "/m"\n'
                   'language = "en-GB"\npost_to_room = true\n')
    s = load_settings(cfg)
    assert (s.captions_engine, s.captions_model_path, s.captions_language,
            s.captions_by_default) == ("pocketsphinx", "/m", "en-GB", True)
    cfg.write_text(f'[bridge]\nshared_secret = "{SECRET}"\n[captions]\nengine = "kaldi"\n')
    with pytest.raises(SettingsError, match="captions.engine"):
        load_settings(cfg)
    cfg.write_text(f'[bridge]\nshared_secret = "{SECRET}"\n[spaces]\n'
                   'captions_by_default = "yes"\n')
    with pytest.raises(SettingsError, match="spaces.captions_by_default: expected true or false"):
        load_settings(cfg)
