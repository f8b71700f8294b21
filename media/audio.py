"""Copy the driving video's audio into the rendered video, aligned to the sampled frames."""
from __future__ import annotations

from pathlib import Path

from mimic.errors import InputError
from mimic.files import publish, remove_quietly, temp_path


def has_audio(path: Path) -> bool:
    import av

    try:
        with av.open(str(path)) as c:
            return bool(c.streams.audio)
    except av.error.FFmpegError:
        return False


def mux_audio(video: Path, audio_source: Path, start_s: float, duration_s: float) -> bool:
    """Rewrite ``video`` with the source's audio from ``start_s`` for ``duration_s`` (AAC). The video
    stream is copied packet for packet; the file is replaced atomically. False if there is no audio."""
    import av

    if not has_audio(audio_source):
        return False
    video = Path(video)
    tmp = temp_path(video)
    try:
        with av.open(str(video)) as vin, av.open(str(audio_source)) as ain, av.open(str(tmp), "w", format="mp4") as out:
            vstream = vin.streams.video[0]
            vout = out.add_stream_from_template(vstream)
            astream = ain.streams.audio[0]
            rate = astream.codec_context.sample_rate or 44100
            aout = out.add_stream("aac", rate=rate)
            aout.layout = "stereo" if (astream.codec_context.layout.nb_channels or 2) >= 2 else "mono"
            resampler = av.AudioResampler(format="fltp", layout=aout.layout, rate=rate)
            for packet in vin.demux(vstream):
                if packet.dts is None:
                    continue
                packet.stream = vout
                out.mux(packet)
            end = start_s + duration_s
            for frame in ain.decode(astream):
                t = float(frame.pts * frame.time_base) if frame.pts is not None else 0.0
                if t + frame.samples / rate <= start_s:
                    continue
                if t >= end:
                    break
                frame.pts = None
                for f in resampler.resample(frame):
                    for packet in aout.encode(f):
                        out.mux(packet)
            for packet in aout.encode(None):
                out.mux(packet)
        tmp.chmod(video.stat().st_mode & 0o777)
        publish(tmp, video)
        return True
    except av.error.FFmpegError as err:
        raise InputError(f"cannot copy the audio of {audio_source}: {err}") from None
    finally:
        remove_quietly(tmp)
