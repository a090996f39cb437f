"""Live captions: each speaker's own stream → VAD → worker process → caption events.

- :mod:`.recognizer`: the engine interface, pocketsphinx (default), vosk, faster-whisper
- :mod:`.vad`: voice activity per speaker, O(1) per frame in the tick
- :mod:`.resample`: 48 kHz → 16 kHz, only for speech
- :mod:`.worker`: the process pool that resamples and recognises
- :mod:`.live`: one stage's captions (events, finals, transcript)
- :mod:`.webvtt`: the transcript file

See docs/captions.md.
"""

from .live import Caption, StageCaptions
from .recognizer import ENGINES, CaptionsError, check_engine, load_engine
from .worker import CaptionPool

__all__ = ["ENGINES", "Caption", "CaptionPool", "CaptionsError", "StageCaptions",
           "check_engine", "load_engine"]
