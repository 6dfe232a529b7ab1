"""Make a long test video by looping real clips, without re-encoding.

    python benchmarks/make_long_video.py OUT.mp4 --minutes 30 CLIP [CLIP ...]

Packets of each clip are copied again and again with shifted timestamps
(every clip starts on a keyframe, so the result decodes cleanly). Clips must
share codec and size; audio is left out. Used by the memory and speed-up
benchmarks in the README.
"""

from __future__ import annotations

import argparse
from fractions import Fraction
from pathlib import Path

import av


def loop_clips(clips: list[Path], out: Path, minutes: float) -> int:
    """Write ``out`` with the clips' video packets repeated for ``minutes``; returns packets."""
    target_s = minutes * 60
    with av.open(str(clips[0])) as first:
        template = first.streams.video[0]
        with av.open(str(out), "w") as output:
            stream = output.add_stream_from_template(template)
            offset_s, written = 0.0, 0
            while offset_s < target_s:
                for clip in clips:
                    offset_s, count = _copy(clip, output, stream, offset_s)
                    written += count
                    if offset_s >= target_s:
                        break
    return written


def _copy(clip: Path, output, stream, offset_s: float) -> tuple[float, int]:
    """Append one clip's packets starting at ``offset_s``; returns the new end time."""
    with av.open(str(clip)) as source:
        video = source.streams.video[0]
        tb: Fraction = video.time_base
        shift = round(offset_s / tb)
        base = video.start_time or 0
        end, count = offset_s, 0
        for packet in source.demux(video):
            if packet.pts is None or packet.size == 0:
                continue
            packet.pts += shift - base
            packet.dts = (packet.dts if packet.dts is not None else packet.pts) + shift - base
            packet.stream = stream
            end = max(end, float((packet.pts + (packet.duration or 0)) * tb))
            output.mux(packet)
            count += 1
    return end, count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("clips", type=Path, nargs="+")
    parser.add_argument("--minutes", type=float, default=10.0)
    args = parser.parse_args()
    packets = loop_clips(args.clips, args.out, args.minutes)
    print(f"{args.out}: {packets} video packets")


if __name__ == "__main__":
    main()
