import subprocess

import numpy as np
import pytest

from bridge import opus
from bridge.ogg import OggOpusWriter, ogg_crc32, page

from .conftest import rms, sine


def test_ogg_crc_check_value():
    # CRC-32/CKSUM without the final xor: poly 0x04C11DB7, init 0, unreflected
    assert ogg_crc32(b"123456789") == 0x765E7680 ^ 0xFFFFFFFF
    assert ogg_crc32(b"") == 0


def test_page_layout():
    raw = page([b"x" * 300, b"yz"], granule=960, serial=7, sequence=3, flags=0x02)
    assert raw[:4] == b"OggS" and raw[5] == 0x02
    assert raw[26] == 3 and list(raw[27:30]) == [255, 45, 2]
    body = bytearray(raw)
    body[22:26] = b"\0\0\0\0"
    assert int.from_bytes(raw[22:26], "little") == ogg_crc32(bytes(body))


def test_opus_round_trip_keeps_level():
    enc, dec = opus.Encoder(), opus.Decoder()
    tone = sine(440, 1.0)
    out = np.concatenate([dec.decode(enc.encode(tone[i:i + 960]))
                          for i in range(0, len(tone), 960)])
    assert rms(out[4800:]) == pytest.approx(rms(tone), rel=0.1)
    assert opus.packet_samples(enc.encode(tone[:960])) == 960
    with pytest.raises(opus.OpusError):
        opus.packet_samples(b"")
    with pytest.raises(ValueError):
        enc.encode(tone[:100])


def test_written_ogg_file_decodes_with_ffmpeg(tmp_path):
    enc = opus.Encoder()
    writer = OggOpusWriter(serial=1234, pre_skip=enc.lookahead, title="Test")
    tone = sine(660, 2.0)
    data = writer.headers()
    frames = [tone[i:i + 960] for i in range(0, len(tone), 960)]
    for i, frame in enumerate(frames):
        data += writer.audio(enc.encode(frame), last=i == len(frames) - 1)
    path = tmp_path / "t.ogg"
    path.write_bytes(data)
    out = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "s16le", "-"],
                         capture_output=True, check=True)
    assert out.stderr == b""
    pcm = np.frombuffer(out.stdout, dtype="<i2")
    assert len(pcm) == len(tone) - enc.lookahead
    assert rms(pcm[4800:]) == pytest.approx(rms(tone), rel=0.1)
