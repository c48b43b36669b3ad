"""Reader (and writer) for the IDX format of MNIST and Fashion-MNIST.

Format (LeCun & Cortes, http://yann.lecun.com/exdb/mnist/): a 4-byte magic number
``0x00 0x00 <type> <ndim>``, then ``ndim`` big-endian uint32 dimension sizes, then the data in
row-major (C) order, big-endian. Type codes: ``0x08`` uint8, ``0x09`` int8, ``0x0B`` int16,
``0x0C`` int32, ``0x0D`` float32, ``0x0E`` float64. Labels are ``0x0801`` (uint8, 1-D) and
images ``0x0803`` (uint8, ``count × rows × cols``).

Files may be gzip-compressed; that is detected from the gzip signature ``1f 8b``, not from the
file name, so a renamed or decompressed file still reads.
"""

from __future__ import annotations

import gzip
import os
import struct

import numpy as np

__all__ = ["read_idx", "write_idx"]

_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {dt.newbyteorder("="): code for code, dt in _DTYPES.items()}
_GZIP_SIGNATURE = b"\x1f\x8b"


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (raw or gzip) into a native-byte-order NumPy array.

    Raises ``ValueError`` naming the file when the header is not IDX or the data is
    shorter or longer than the header says.
    """
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == _GZIP_SIGNATURE:
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise ValueError(f"Not an IDX file: {os.fspath(path)} (bad magic number {raw[:4].hex()})")
    dtype, ndim = _DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"Truncated IDX header: {os.fspath(path)}")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"IDX size mismatch in {os.fspath(path)}: header {shape} needs {expected} bytes "
            f"of data, file has {len(raw) - header}"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    # Native byte order, and a writable copy so torch.from_numpy can use it without warnings.
    return data.astype(dtype.newbyteorder("="), copy=True)


def write_idx(path: str | os.PathLike[str], array: np.ndarray, compress: bool = False) -> None:
    """Write ``array`` as IDX (gzip-compressed when ``compress``); the inverse of
    :func:`read_idx`, handy for making small test sets."""
    array = np.ascontiguousarray(array)
    code = _CODES.get(array.dtype.newbyteorder("="))
    if code is None:
        raise ValueError(f"Unsupported IDX dtype: {array.dtype}")
    if array.ndim > 255:
        raise ValueError(f"Too many dimensions for IDX: {array.ndim}")
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.astype(_DTYPES[code], copy=False).tobytes()
    with open(path, "wb") as f:
        f.write(gzip.compress(payload) if compress else payload)
