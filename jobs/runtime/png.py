"""A scatter plot as a PNG file with the standard library only (zlib + struct): the cluster stage's 2-D
topic map, where the stage environment has no plotting library (the cpu environment has no matplotlib).
Points are small squares, one colour per group; no text (the labels are in topics.json beside it)."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import List, Sequence, Tuple

# Tableau 10: distinguishable colours; more groups cycle through them
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode(pixels: List[bytearray], width: int, height: int) -> bytes:
    """8-bit RGB PNG of `height` rows of width*3 bytes."""
    raw = b"".join(b"\x00" + bytes(row) for row in pixels)  # filter type 0 per row
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + _chunk(b"IDAT", zlib.compress(raw, 6)) + _chunk(b"IEND", b""))


def scatter(path: Path, points: Sequence[Tuple[float, float]], groups: Sequence[int], size: int = 640,
            radius: int = 2, margin: int = 12) -> None:
    """Write a size x size PNG of `points` (any units; each axis drawn by rank), point i coloured by groups[i]."""
    pixels = [bytearray(b"\xff" * size * 3) for _ in range(size)]
    if points:
        # each axis by rank (a quantile map: order kept, distances not): a few far outliers (a cluster of
        # identical boilerplate pages) would otherwise squeeze every other topic into one corner
        def ranks(vals):
            order = sorted(range(len(vals)), key=vals.__getitem__)
            out = [0.0] * len(vals)
            for r, i in enumerate(order):
                out[i] = r / max(1, len(vals) - 1)
            return out

        inner = size - 2 * margin - 1
        for x, y, g in zip(ranks([p[0] for p in points]), ranks([p[1] for p in points]), groups):
            cx, cy = margin + int(x * inner), size - 1 - margin - int(y * inner)
            r, gr, b = PALETTE[int(g) % len(PALETTE)]
            for yy in range(max(0, cy - radius), min(size, cy + radius + 1)):
                row = pixels[yy]
                for xx in range(max(0, cx - radius), min(size, cx + radius + 1)):
                    row[3 * xx:3 * xx + 3] = bytes((r, gr, b))
    Path(path).write_bytes(encode(pixels, size, size))
