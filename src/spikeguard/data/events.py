"""Event-camera file readers and writers (numpy only; AEDAT 4 through the optional ``aedat`` package).

Every reader returns one structured array of dtype :data:`EVENT_DTYPE` with fields
``t`` (microseconds, int64), ``x``, ``y`` (pixel, uint16) and ``p`` (polarity, 0 = OFF,
1 = ON), in file order. Formats:

* **AEDAT 2.0** (jAER; CIFAR10-DVS as distributed, DVS128): ``#`` header lines, then
  big-endian ``uint32`` address + ``uint32`` timestamp per event, decoded with
  SpikingJelly's convention ``x = 127 - ((a >> 8) & 0x7F)``, ``y = 127 - ((a >> 1) & 0x7F)``,
  ``p = 1 - (a & 1)``.
* **AEDAT 3.1** (cAER; DVS128 Gesture): header lines up to ``#!END-HEADER``, then packets of
  a 28-byte little-endian header and ``eventNumber`` events of ``eventSize`` bytes; polarity
  packets (type 1) hold ``uint32 data, int32 timestamp`` with ``x = (d >> 17) & 0x7FFF``,
  ``y = (d >> 2) & 0x7FFF``, ``p = (d >> 1) & 1`` and the packet's overflow ``<< 31``. Other
  known cAER packet types are skipped; an unknown type is an error.
* **N-MNIST binary**: 5 bytes per event, ``x = b0``, ``y = b1``, ``p = b2 >> 7``,
  ``t = (b2 & 0x7F) << 16 | b3 << 8 | b4``.
* **.npz** with arrays ``t, x, y, p`` (SpikingJelly's ``events_np`` layout) or one
  structured array ``events``.
* **AEDAT 4** (``.aedat4``, iniVation DV): ``pip install 'spikeguard[events]'`` (the
  ``aedat`` package).

A bad header, a truncated file or an unknown packet raises a one-line
:class:`~spikeguard.errors.DataError` naming the file and the byte offset.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import DataError

EVENT_DTYPE = np.dtype([("t", "<i8"), ("x", "<u2"), ("y", "<u2"), ("p", "u1")])
EVENT_SUFFIXES = (".aedat", ".aedat4", ".bin", ".npz")

_AEDAT3_HEADER = 28
_AEDAT3_POLARITY = 1
_AEDAT3_KNOWN = range(0, 13)  # cAER's event types (special, polarity, frame, IMU6, IMU9, sample, ear, ...)


def make_events(t, x, y, p) -> np.ndarray:
    """One structured event array from four equally long sequences."""
    t, x, y, p = (np.asarray(a) for a in (t, x, y, p))
    if not (len(t) == len(x) == len(y) == len(p)):
        raise DataError(f"event fields have different lengths: t {len(t)}, x {len(x)}, y {len(y)}, p {len(p)}")
    ev = np.empty(len(t), dtype=EVENT_DTYPE)
    ev["t"], ev["x"], ev["y"], ev["p"] = t, x, y, p
    return ev


def _read(path: str | os.PathLike) -> tuple[Path, bytes]:
    p = Path(path)
    try:
        return p, p.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read event file {p}: {e.strerror or e}") from None


def _skip_header(p: Path, data: bytes, magic: bytes, end_line: bytes | None = None) -> int:
    """Offset of the first byte after the ``#`` header lines; checks the magic first line."""
    if not data.startswith(magic):
        first = data[:20].split(b"\n")[0]
        raise DataError(f"{p}: offset 0: bad header {first!r}, expected a line starting with {magic.decode()!r}")
    pos = 0
    while pos < len(data) and data[pos : pos + 1] == b"#":
        nl = data.find(b"\n", pos)
        if nl < 0:
            raise DataError(f"{p}: offset {pos}: truncated header (a '#' line without its end)")
        line = data[pos:nl].rstrip(b"\r")
        pos = nl + 1
        if end_line is not None and line == end_line:
            return pos
    if end_line is not None:
        raise DataError(f"{p}: offset {pos}: header has no {end_line.decode()!r} line")
    return pos


# ------------------------------------------------------------------------------------------
# AEDAT 2.0 (jAER, DVS128)


def read_aedat2(path: str | os.PathLike) -> np.ndarray:
    """Read a jAER AEDAT 2.0 file of a DVS128 (128x128), e.g. one CIFAR10-DVS sample."""
    p, data = _read(path)
    start = _skip_header(p, data, b"#!AER-DAT2")
    body = len(data) - start
    if body % 8:
        raise DataError(
            f"{p}: offset {start + body - body % 8}: truncated file ({body % 8} trailing bytes of an 8-byte event)"
        )
    raw = np.frombuffer(data, dtype=">u4", offset=start).reshape(-1, 2)
    a = raw[:, 0]
    return make_events(raw[:, 1].astype(np.int64), 127 - ((a >> 8) & 0x7F), 127 - ((a >> 1) & 0x7F), 1 - (a & 1))


def write_aedat2(path: str | os.PathLike, events: np.ndarray) -> None:
    """Write events of a 128x128 sensor as AEDAT 2.0 (the inverse of :func:`read_aedat2`)."""
    ev = np.asarray(events)
    if len(ev) and (ev["x"].max() > 127 or ev["y"].max() > 127):
        raise DataError("AEDAT 2.0 (DVS128) holds coordinates 0..127 only")
    x = 127 - ev["x"].astype(np.uint32)
    y = 127 - ev["y"].astype(np.uint32)
    a = (x << 8) | (y << 1) | (1 - ev["p"].astype(np.uint32))
    raw = np.stack([a, ev["t"].astype(np.uint32)], 1).astype(">u4")
    Path(path).write_bytes(b"#!AER-DAT2.0\r\n# written by spikeguard\r\n" + raw.tobytes())


# ------------------------------------------------------------------------------------------
# AEDAT 3.1 (cAER, DVS128 Gesture)

_AEDAT3_HEAD_DTYPE = np.dtype(
    [
        ("type", "<i2"),
        ("source", "<i2"),
        ("size", "<i4"),
        ("ts_offset", "<i4"),
        ("ts_overflow", "<i4"),
        ("capacity", "<i4"),
        ("number", "<i4"),
        ("valid", "<i4"),
    ]
)


def read_aedat3(path: str | os.PathLike) -> np.ndarray:
    """Read the polarity events of an AEDAT 3.1 file (other known packet types are skipped)."""
    p, data = _read(path)
    pos = _skip_header(p, data, b"#!AER-DAT3", b"#!END-HEADER")
    parts: list[np.ndarray] = []
    while pos < len(data):
        if pos + _AEDAT3_HEADER > len(data):
            raise DataError(f"{p}: offset {pos}: truncated packet header ({len(data) - pos} of 28 bytes)")
        h = np.frombuffer(data, dtype=_AEDAT3_HEAD_DTYPE, count=1, offset=pos)[0]
        etype, size, number = int(h["type"]), int(h["size"]), int(h["number"])
        if etype not in _AEDAT3_KNOWN or size <= 0 or number < 0:
            raise DataError(f"{p}: offset {pos}: unknown packet (type {etype}, event size {size}, {number} events)")
        body = pos + _AEDAT3_HEADER
        end = body + size * number
        if end > len(data):
            raise DataError(
                f"{p}: offset {pos}: truncated packet ({number} events of {size} bytes, {len(data) - body} bytes left)"
            )
        if etype == _AEDAT3_POLARITY:
            if size != 8:
                raise DataError(f"{p}: offset {pos}: polarity packet with {size}-byte events (expected 8)")
            raw = np.frombuffer(data, dtype="<u4", count=2 * number, offset=body).reshape(-1, 2)
            d = raw[:, 0]
            valid = (d & 1).astype(bool)
            t = raw[:, 1].astype(np.int64) | (np.int64(int(h["ts_overflow"])) << 31)
            parts.append(
                make_events(t[valid], ((d >> 17) & 0x7FFF)[valid], ((d >> 2) & 0x7FFF)[valid], ((d >> 1) & 1)[valid])
            )
        pos = end
    return np.concatenate(parts) if parts else np.empty(0, dtype=EVENT_DTYPE)


def write_aedat3(path: str | os.PathLike, events: np.ndarray, packet_size: int = 4096) -> None:
    """Write events as AEDAT 3.1 polarity packets (the inverse of :func:`read_aedat3`)."""
    ev = np.asarray(events)
    chunks = [b"#!AER-DAT3.1\r\n#Format: RAW\r\n#!END-HEADER\r\n"]
    for s in range(0, len(ev), packet_size):
        e = ev[s : s + packet_size]
        overflow = (e["t"] >> 31).astype(np.int64)
        for ov in np.unique(overflow):  # one packet per timestamp-overflow value
            sel = e[overflow == ov]
            head = np.zeros(1, dtype=_AEDAT3_HEAD_DTYPE)
            head[0] = (_AEDAT3_POLARITY, 1, 8, 4, int(ov), len(sel), len(sel), len(sel))
            d = (
                (sel["x"].astype(np.uint32) << 17)
                | (sel["y"].astype(np.uint32) << 2)
                | (sel["p"].astype(np.uint32) << 1)
                | np.uint32(1)
            )
            t = (sel["t"] & 0x7FFFFFFF).astype(np.uint32)
            chunks += [head.tobytes(), np.stack([d, t], 1).astype("<u4").tobytes()]
    Path(path).write_bytes(b"".join(chunks))


# ------------------------------------------------------------------------------------------
# N-MNIST binary


def read_nmnist(path: str | os.PathLike) -> np.ndarray:
    """Read one N-MNIST ``.bin`` sample (34x34 sensor)."""
    p, data = _read(path)
    if len(data) % 5:
        raise DataError(
            f"{p}: offset {len(data) - len(data) % 5}: truncated file ({len(data) % 5} trailing bytes "
            f"of a 5-byte event)"
        )
    b = np.frombuffer(data, dtype=np.uint8).reshape(-1, 5).astype(np.int64)
    t = ((b[:, 2] & 0x7F) << 16) | (b[:, 3] << 8) | b[:, 4]
    return make_events(t, b[:, 0], b[:, 1], b[:, 2] >> 7)


def write_nmnist(path: str | os.PathLike, events: np.ndarray) -> None:
    """Write events in the N-MNIST binary format (coordinates < 256, timestamps < 2^23)."""
    ev = np.asarray(events)
    if len(ev) and (ev["x"].max() > 255 or ev["y"].max() > 255 or ev["t"].max() >= 1 << 23 or ev["t"].min() < 0):
        raise DataError("the N-MNIST format holds coordinates 0..255 and timestamps 0..2^23-1 only")
    t = ev["t"].astype(np.int64)
    b = np.stack([ev["x"], ev["y"], (ev["p"].astype(np.int64) << 7) | (t >> 16), (t >> 8) & 0xFF, t & 0xFF], 1)
    Path(path).write_bytes(b.astype(np.uint8).tobytes())


# ------------------------------------------------------------------------------------------
# .npz and AEDAT 4


def read_npz(path: str | os.PathLike) -> np.ndarray:
    """Read ``t, x, y, p`` arrays (SpikingJelly's ``events_np``) or a structured ``events`` array."""
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as z:
            if "events" in z.files:
                ev = z["events"]
                return make_events(ev["t"], ev["x"], ev["y"], ev["p"])
            missing = [k for k in "txyp" if k not in z.files]
            if missing:
                raise DataError(f"{p}: offset 0: .npz without the event arrays {missing} (has {z.files})")
            return make_events(z["t"], z["x"], z["y"], z["p"])
    except DataError:
        raise
    except (OSError, ValueError, KeyError) as e:
        raise DataError(f"{p}: offset 0: not a readable .npz of events ({e})") from None


def write_npz(path: str | os.PathLike, events: np.ndarray) -> None:
    """Write events as an ``.npz`` of ``t, x, y, p`` arrays."""
    ev = np.asarray(events)
    with open(path, "wb") as f:
        np.savez(f, t=ev["t"], x=ev["x"], y=ev["y"], p=ev["p"])


def read_aedat4(path: str | os.PathLike) -> np.ndarray:
    """Read the polarity events of an AEDAT 4 file (needs the optional ``aedat`` package)."""
    try:
        import aedat  # lazy: optional AEDAT 4 reader (events extra)
    except ImportError:
        raise DataError(
            f"{path}: reading AEDAT 4 needs the 'aedat' package: pip install 'spikeguard[events]'"
        ) from None
    p = Path(path)
    parts = []
    try:
        for packet in aedat.Decoder(str(p)):
            if "events" in packet:
                e = packet["events"]
                parts.append(make_events(e["t"], e["x"], e["y"], e["on"]))
    except (OSError, RuntimeError, ValueError) as e:
        raise DataError(f"{p}: not a readable AEDAT 4 file: {str(e).splitlines()[0] if str(e) else e}") from None
    return np.concatenate(parts) if parts else np.empty(0, dtype=EVENT_DTYPE)


def read_events(path: str | os.PathLike) -> np.ndarray:
    """Read any supported event file, chosen by suffix and, for ``.aedat``, by its header."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix == ".aedat4":
        return read_aedat4(p)
    if suffix == ".npz":
        return read_npz(p)
    if suffix == ".bin":
        return read_nmnist(p)
    if suffix in (".aedat", ".dat"):
        try:
            with open(p, "rb") as f:
                head = f.read(16)
        except OSError as e:
            raise DataError(f"cannot read event file {p}: {e.strerror or e}") from None
        if head.startswith(b"#!AER-DAT3"):
            return read_aedat3(p)
        if head.startswith(b"#!AER-DAT4"):
            return read_aedat4(p)
        return read_aedat2(p)
    raise DataError(f"{p}: unknown event file type {suffix!r}; known: {', '.join(EVENT_SUFFIXES)}")
