"""Speech recognisers behind one small interface.

An :class:`Engine` is loaded once per worker process (it holds the model); it hands
out :class:`Recognizer` objects, each transcribing one utterance at a time at
:attr:`Engine.sample_rate` (16 kHz mono int16 for every engine here):

    rec = engine.recognizer()
    rec.start()
    rec.accept(pcm16k)        # as often as audio arrives
    rec.partial()             # best guess so far ("" if none yet)
    text = rec.finish()       # final text; rec can then start() again

Engines, chosen by ``captions.engine``:

- ``pocketsphinx`` (default): the wheel ships a US English model, so nothing else needs
  installing. ``model_path`` may name another model folder (acoustic model directory
  with ``mdef``, a ``*.lm.bin``/``*.lm`` language model and a ``*.dict``).
- ``vosk``: ``pip install vosk`` and an unpacked model folder in ``model_path``.
- ``faster-whisper``: ``pip install faster-whisper``; ``model_path`` is a model folder or
  name (default ``base``). No partial captions: it transcribes whole utterances.

The engine's package is imported only when that engine is configured. Anything wrong
(package missing, model missing or unreadable, language not covered) raises
:class:`CaptionsError` whose message names the setting and says how to fix it.
"""

from __future__ import annotations

import importlib.util
import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np

ENGINES = ("pocketsphinx", "vosk", "faster-whisper")
_PACKAGES = {"pocketsphinx": "pocketsphinx", "vosk": "vosk", "faster-whisper": "faster_whisper"}


class CaptionsError(RuntimeError):
    """Captions cannot run with this configuration; the message says why and what to do."""


class Recognizer(ABC):
    """Transcribes one utterance at a time (16 kHz mono int16)."""

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def accept(self, pcm: np.ndarray) -> None: ...

    @abstractmethod
    def partial(self) -> str: ...

    @abstractmethod
    def finish(self) -> str: ...


class Engine(ABC):
    name: str = ""
    sample_rate: int = 16000
    #: whether partial() says anything before finish()
    partials: bool = True

    @abstractmethod
    def recognizer(self) -> Recognizer: ...


def check_engine(engine: str, model_path: str = "", language: str = "en-US") -> None:
    """Cheap checks without importing the engine: known name, package installed, model
    on disk. :func:`load_engine` does the real (slow) load."""
    if engine not in ENGINES:
        raise CaptionsError(f"captions.engine: {engine!r} is not one of {', '.join(ENGINES)}")
    if engine == "vosk" and not model_path:
        raise CaptionsError('captions.model_path: required when captions.engine = "vosk" '
                            "(the folder of an unpacked Vosk model)")
    package = _PACKAGES[engine]
    if importlib.util.find_spec(package) is None:
        extra = " (or install chorus[captions])" if engine == "pocketsphinx" else ""
        raise CaptionsError(
            f"captions.engine = {engine!r} but the {package!r} package is not installed: "
            f"pip install {engine}{extra}")
    if model_path and engine != "faster-whisper" and not Path(model_path).is_dir():
        raise CaptionsError(f"captions.model_path: {model_path!r} is not a folder "
                            f"(engine {engine!r} needs a model folder)")
    if engine == "pocketsphinx" and not model_path and not _english(language):
        raise CaptionsError(
            f"captions.language = {language!r}: pocketsphinx's built-in model is US English "
            "only; set captions.model_path to a pocketsphinx model for that language")


def load_engine(engine: str, model_path: str = "", language: str = "en-US") -> Engine:
    """Import and load the configured engine (slow: loads the model)."""
    check_engine(engine, model_path, language)
    try:
        if engine == "pocketsphinx":
            loaded: Engine = PocketsphinxEngine(model_path)
        elif engine == "vosk":
            loaded = VoskEngine(model_path)
        else:
            loaded = FasterWhisperEngine(model_path, language)
        # a model that loads but cannot decode fails here, not at the first caption
        probe = loaded.recognizer()
        probe.start()
        probe.accept(np.zeros(loaded.sample_rate // 10, dtype=np.int16))
        probe.finish()
    except CaptionsError:
        raise
    except Exception as exc:  # the engines raise anything from RuntimeError to OSError
        where = f"model {model_path!r}" if model_path else "its built-in model"
        raise CaptionsError(f"captions.engine = {engine!r}: could not load {where}: "
                            f"{type(exc).__name__}: {exc}") from exc
    return loaded


def _english(language: str) -> bool:
    return language.lower().replace("_", "-").split("-")[0] == "en"


# -- pocketsphinx ------------------------------------------------------------------------


def _pocketsphinx_files(folder: Path) -> dict[str, str]:
    hmm = next((p for p in [folder, *sorted(folder.iterdir())]
                if p.is_dir() and (p / "mdef").exists()), None)
    lm = next((p for pat in ("*.lm.bin", "*.lm", "*.arpa") for p in sorted(folder.glob(pat))),
              None)
    dic = next(iter(sorted(folder.glob("*.dict"))), None)
    missing = [what for what, found in (("an acoustic model folder with 'mdef'", hmm),
                                        ("a language model (*.lm.bin, *.lm, *.arpa)", lm),
                                        ("a pronunciation dictionary (*.dict)", dic))
               if found is None]
    if missing:
        raise CaptionsError(f"captions.model_path: {str(folder)!r} has no "
                            + " and no ".join(missing))
    return {"hmm": str(hmm), "lm": str(lm), "dict": str(dic)}


class PocketsphinxRecognizer(Recognizer):
    def __init__(self, decoder: Any) -> None:
        self._decoder = decoder
        self._in_utt = False

    def start(self) -> None:
        if self._in_utt:
            self._decoder.end_utt()
        self._decoder.start_utt()
        self._in_utt = True

    def accept(self, pcm: np.ndarray) -> None:
        self._decoder.process_raw(pcm.astype("<i2", copy=False).tobytes(), False, False)

    def partial(self) -> str:
        hyp = self._decoder.hyp()
        return hyp.hypstr if hyp is not None else ""

    def finish(self) -> str:
        if self._in_utt:
            self._decoder.end_utt()
            self._in_utt = False
        return self.partial()


class PocketsphinxEngine(Engine):
    name = "pocketsphinx"

    def __init__(self, model_path: str = "") -> None:
        self._kwargs: dict[str, Any] = {"loglevel": "FATAL"}
        if model_path:
            self._kwargs.update(_pocketsphinx_files(Path(model_path)))
        from pocketsphinx import Decoder

        self._decoder_cls = Decoder

    def recognizer(self) -> Recognizer:
        return PocketsphinxRecognizer(self._decoder_cls(**self._kwargs))


# -- vosk --------------------------------------------------------------------------------


class VoskRecognizer(Recognizer):
    def __init__(self, model: Any, rate: int) -> None:
        self._model, self._rate = model, rate
        self._rec: Any = None
        self._done: list[str] = []

    def start(self) -> None:
        import vosk

        self._rec = vosk.KaldiRecognizer(self._model, self._rate)
        self._done = []

    def accept(self, pcm: np.ndarray) -> None:
        if self._rec.AcceptWaveform(pcm.astype("<i2", copy=False).tobytes()):
            self._done.append(json.loads(self._rec.Result()).get("text", ""))

    def partial(self) -> str:
        now = json.loads(self._rec.PartialResult()).get("partial", "")
        return " ".join(t for t in [*self._done, now] if t)

    def finish(self) -> str:
        last = json.loads(self._rec.FinalResult()).get("text", "")
        return " ".join(t for t in [*self._done, last] if t)


class VoskEngine(Engine):
    name = "vosk"

    def __init__(self, model_path: str) -> None:
        import vosk

        vosk.SetLogLevel(-1)
        self._model = vosk.Model(model_path)

    def recognizer(self) -> Recognizer:
        return VoskRecognizer(self._model, self.sample_rate)


# -- faster-whisper ----------------------------------------------------------------------


class WhisperRecognizer(Recognizer):
    def __init__(self, model: Any, language: str) -> None:
        self._model, self._language = model, language
        self._chunks: list[np.ndarray] = []

    def start(self) -> None:
        self._chunks = []

    def accept(self, pcm: np.ndarray) -> None:
        self._chunks.append(pcm)

    def partial(self) -> str:
        return ""

    def finish(self) -> str:
        if not self._chunks:
            return ""
        audio = np.concatenate(self._chunks).astype(np.float32) / 32768.0
        self._chunks = []
        segments, _info = self._model.transcribe(audio, language=self._language,
                                                 beam_size=1, vad_filter=False)
        return " ".join(s.text.strip() for s in segments).strip()


class FasterWhisperEngine(Engine):
    name = "faster-whisper"
    partials = False

    def __init__(self, model_path: str, language: str) -> None:
        from faster_whisper import WhisperModel

        self._model = WhisperModel(model_path or "base", device="cpu", compute_type="int8")
        self._language = language.lower().replace("_", "-").split("-")[0] or None

    def recognizer(self) -> Recognizer:
        return WhisperRecognizer(self._model, self._language)
