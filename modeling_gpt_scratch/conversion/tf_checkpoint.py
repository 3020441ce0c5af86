"""Read TensorFlow checkpoints ("V2" tensor bundles) without TensorFlow.

A checkpoint written by `tf.compat.v1.train.Saver` (as OpenAI's GPT-2 release was) or by
`tf.train.Checkpoint` is a *prefix* such as `model.ckpt` with these files:

- `model.ckpt.index`: a LevelDB-format table (an "SSTable") mapping each tensor's name to a
  `BundleEntryProto` (dtype, shape, which data file, byte offset, byte size, masked crc32c). The
  empty key holds a `BundleHeaderProto` (number of data files, byte order, format version).
- `model.ckpt.data-00000-of-00001` (one file per shard): the tensors' raw bytes, back to back.
- `model.ckpt.meta` (the graph) and the `checkpoint` file (which prefix is the latest) are not
  needed to read the tensors.

    from modeling_gpt_scratch.conversion.tf_checkpoint import TFCheckpoint, list_variables, load_checkpoint

    list_variables("gpt2/124M/model.ckpt")   # [(name, shape), ...] like tf.train.list_variables
    with TFCheckpoint("gpt2/124M/model.ckpt") as ckpt:
        wte = ckpt.read("model/wte")         # a read-only numpy array over the memory-mapped file
        ckpt.release("model/wte")            # hand its pages back (the array stays usable)

The data files are memory-mapped: `read` copies nothing, so a converter reads each tensor once,
turns it into what it needs, and `release`s its pages, which keeps resident memory at about one
copy of the weights however large the checkpoint is. Every index block's crc32c is checked (a
small pure-Python crc32c is enough for the index); each tensor's crc32c is checked on `read` when
a fast crc32c is installed (`google-crc32c` or `crc32c`; `pip install 'gpt-scratch[tf-checkpoint]'`)
and skipped otherwise (`TFCheckpoint.verifies_data` says which). Sizes are always checked, so a
truncated data file is reported (naming the file and the first tensor that does not fit) before
anything is read.

Supported: numeric tensors (all numpy dtypes TensorFlow has: float16/32/64, ints, bool, complex),
either byte order, any number of shards, uncompressed index blocks (what TensorFlow has written
since 1.2). Not supported, each with a clear `CheckpointError`: string, bfloat16 and quantized
tensors, partitioned (sliced) variables, Snappy-compressed index blocks, and TF1's older V1
checkpoints (a single file without `.index`).

Format references: LevelDB's `table_format.md`, TensorFlow's `tensor_bundle.proto` and
`tensorflow/core/util/tensor_bundle/tensor_bundle.cc`.
"""

import json
import mmap
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "CheckpointError",
    "TensorInfo",
    "TFCheckpoint",
    "crc32c",
    "latest_checkpoint",
    "list_variables",
    "load_checkpoint",
]

TABLE_MAGIC = 0xDB4775248B80FB57  # the last 8 bytes of every LevelDB table (little-endian)
FOOTER_SIZE = 48  # two block handles padded to 40 bytes, then the magic
BLOCK_TRAILER_SIZE = 5  # 1 byte compression type + 4 bytes masked crc32c of contents and type
BUNDLE_VERSION = 1  # the format version this reader understands (TensorFlow's kTensorBundleVersion)

# TensorFlow's DataType enum (types.proto) -> numpy dtype, for the types numpy has.
NUMPY_DTYPES = {
    1: np.dtype("float32"),
    2: np.dtype("float64"),
    3: np.dtype("int32"),
    4: np.dtype("uint8"),
    5: np.dtype("int16"),
    6: np.dtype("int8"),
    8: np.dtype("complex64"),
    9: np.dtype("int64"),
    10: np.dtype("bool"),
    17: np.dtype("uint16"),
    18: np.dtype("complex128"),
    19: np.dtype("float16"),
    22: np.dtype("uint32"),
    23: np.dtype("uint64"),
}
OTHER_DTYPES = {
    7: "string",
    11: "qint8",
    12: "quint8",
    13: "qint32",
    14: "bfloat16",
    15: "qint16",
    16: "quint16",
    20: "resource",
    21: "variant",
}


class CheckpointError(ValueError):
    """The checkpoint cannot be read. The message is one line naming the file (and tensor)."""


# ------------------------------------------------------------------------------------ crc32c

_CRC_TABLE = []
for _n in range(256):
    _c = _n
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1  # Castagnoli polynomial, reflected
    _CRC_TABLE.append(_c)
del _n, _c


def crc32c(data, crc: int = 0) -> int:
    """CRC-32C (Castagnoli) of `data`, continuing from `crc`. Pure Python: fine for the few kB of an
    index file, far too slow for tensor data (see `fast_crc32c`)."""
    crc ^= 0xFFFFFFFF
    table = _CRC_TABLE
    for byte in bytes(data):
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def unmask_crc(masked: int) -> int:
    """LevelDB and TensorFlow store crc32c values "masked" (rotated and offset); this undoes it."""
    rot = (masked - 0xA282EAD8) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


def fast_crc32c():
    """A C implementation of crc32c taking any bytes-like object, or None when neither
    `google-crc32c` (with its C extension) nor `crc32c` is installed."""
    try:
        import google_crc32c

        if google_crc32c.implementation == "c":
            chunk = 1 << 24

            def value(data) -> int:  # google_crc32c takes `bytes` only: checksum 16 MiB copies
                view, crc = memoryview(data).cast("B"), 0
                for start in range(0, len(view), chunk):
                    crc = google_crc32c.extend(crc, bytes(view[start : start + chunk]))
                return crc

            return value
    except ImportError:
        pass
    try:
        import crc32c as crc32c_package

        return lambda data: crc32c_package.crc32c(memoryview(data).cast("B"))
    except ImportError:
        return None


# ------------------------------------------------------------------------- protobuf wire format


def _varint(buf, pos: int, end: int, what: str) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise ValueError(f"bad varint in {what}")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf, what: str):
    """(field number, value) of each field of a serialized protobuf message: an int for varint and
    fixed-width fields, a bytes-like object for length-delimited ones."""
    pos, end = 0, len(buf)
    while pos < end:
        tag, pos = _varint(buf, pos, end, what)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = _varint(buf, pos, end, what)
        elif wire == 1 or wire == 5:
            width = 8 if wire == 1 else 4
            if pos + width > end:
                raise ValueError(f"truncated field {number} in {what}")
            value = int.from_bytes(buf[pos : pos + width], "little")
            pos += width
        elif wire == 2:
            length, pos = _varint(buf, pos, end, what)
            if pos + length > end:
                raise ValueError(f"truncated field {number} in {what}")
            value = buf[pos : pos + length]
            pos += length
        else:
            raise ValueError(f"unsupported protobuf wire type {wire} (field {number}) in {what}")
        yield number, value


def _int64(value: int) -> int:
    """A varint read as protobuf's int64 (negative numbers are 10-byte two's complement)."""
    return value - (1 << 64) if value >= 1 << 63 else value


# --------------------------------------------------------------------------- the table (.index)


def _block_handle(buf, pos: int, end: int, what: str) -> tuple[int, int, int]:
    offset, pos = _varint(buf, pos, end, what)
    size, pos = _varint(buf, pos, end, what)
    return offset, size, pos


def _read_block(data: bytes, offset: int, size: int, path: Path) -> memoryview:
    """The contents of the block at `offset`, its checksum verified."""
    end = offset + size
    if end + BLOCK_TRAILER_SIZE > len(data) - FOOTER_SIZE:
        raise CheckpointError(
            f"{path} is corrupt: a block at bytes {offset}..{end} lies past the end of the table "
            f"({len(data)} bytes); the file may be truncated."
        )
    compression = data[end]
    stored = int.from_bytes(data[end + 1 : end + BLOCK_TRAILER_SIZE], "little")
    if unmask_crc(stored) != crc32c(memoryview(data)[offset : end + 1]):
        raise CheckpointError(f"{path} is corrupt: the block at byte {offset} fails its crc32c checksum.")
    if compression != 0:
        kind = "Snappy-compressed" if compression == 1 else f"compressed (type {compression})"
        raise CheckpointError(
            f"{path} has a {kind} block, which this reader does not decode (TensorFlow writes "
            "uncompressed indexes since 1.2); re-save the checkpoint with a newer TensorFlow."
        )
    return memoryview(data)[offset:end]


def _block_entries(block: memoryview, path: Path):
    """(key, value) of each entry of a table block (keys share prefixes with the previous key)."""
    what = f"{path} (a table block)"
    if len(block) < 4:
        raise CheckpointError(f"{path} is corrupt: a table block of {len(block)} bytes is too short.")
    num_restarts = int.from_bytes(block[-4:], "little")
    limit = len(block) - 4 - 4 * num_restarts
    if num_restarts == 0 or limit < 0:
        raise CheckpointError(f"{path} is corrupt: a table block has a bad restart array.")
    pos, key = 0, b""
    try:
        while pos < limit:
            shared, pos = _varint(block, pos, limit, what)
            unshared, pos = _varint(block, pos, limit, what)
            value_size, pos = _varint(block, pos, limit, what)
            if shared > len(key) or pos + unshared + value_size > limit:
                raise ValueError("an entry overruns its block")
            key = key[:shared] + bytes(block[pos : pos + unshared])
            pos += unshared
            yield key, block[pos : pos + value_size]
            pos += value_size
    except ValueError as e:
        raise CheckpointError(f"{path} is corrupt: {e}.") from None


def read_table(path: str | os.PathLike) -> list[tuple[bytes, memoryview]]:
    """All (key, value) entries of a LevelDB-format table file, in key order, every block's crc32c
    checked."""
    path = Path(path)
    data = path.read_bytes()
    if len(data) < FOOTER_SIZE or int.from_bytes(data[-8:], "little") != TABLE_MAGIC:
        raise CheckpointError(
            f"{path} is not a TensorFlow checkpoint index: it does not end with the table magic number "
            f"({len(data)} bytes; truncated, or not a .index file)."
        )
    footer = memoryview(data)[-FOOTER_SIZE:]
    try:
        _, _, pos = _block_handle(footer, 0, 40, f"{path} footer")  # the metaindex: no filters here
        index_offset, index_size, _ = _block_handle(footer, pos, 40, f"{path} footer")
    except ValueError as e:
        raise CheckpointError(f"{path} is corrupt: {e}.") from None
    entries = []
    for _, handle in _block_entries(_read_block(data, index_offset, index_size, path), path):
        try:
            offset, size, _ = _block_handle(handle, 0, len(handle), f"{path} index block")
        except ValueError as e:
            raise CheckpointError(f"{path} is corrupt: {e}.") from None
        entries.extend(_block_entries(_read_block(data, offset, size, path), path))
    keys = [key for key, _ in entries]
    if any(a >= b for a, b in zip(keys, keys[1:], strict=False)):
        raise CheckpointError(f"{path} is corrupt: its keys are not in order.")
    return entries


# ------------------------------------------------------------------------------ the bundle


@dataclass(frozen=True)
class TensorInfo:
    """Where and what one tensor of a checkpoint is (its `BundleEntryProto`)."""

    name: str
    dtype: str  # numpy's name ("float32"), or TensorFlow's for types numpy lacks ("bfloat16")
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int  # bytes
    crc32c: int | None  # masked, as stored

    @property
    def numpy_dtype(self) -> np.dtype | None:
        return np.dtype(self.dtype) if self.dtype in _NUMPY_NAMES else None


_NUMPY_NAMES = {dt.name for dt in NUMPY_DTYPES.values()}


def _parse_header(value, path: Path) -> tuple[int, bool]:
    """(number of shards, big-endian?) from the `BundleHeaderProto`."""
    num_shards, endianness, min_consumer = 0, 0, 0
    for number, field in _fields(value, f"{path} header"):
        if number == 1:
            num_shards = field
        elif number == 2:
            endianness = field
        elif number == 3:  # VersionDef: producer = 1, min_consumer = 2, bad_consumers = 3
            for sub, version in _fields(field, f"{path} header version"):
                if sub == 2:
                    min_consumer = version
    if min_consumer > BUNDLE_VERSION:
        raise CheckpointError(
            f"{path} needs a reader of checkpoint format version {min_consumer} or newer; "
            f"this one reads version {BUNDLE_VERSION}."
        )
    if not 1 <= num_shards < 1 << 31 or endianness not in (0, 1):
        raise CheckpointError(
            f"{path} is corrupt: its header says {num_shards} data files, byte order {endianness}."
        )
    return num_shards, endianness == 1


def _parse_entry(name: str, value, path: Path) -> TensorInfo:
    what = f"{path} entry `{name}`"
    dtype_enum, shape, shard, offset, size, crc, sliced = 0, [], 0, 0, 0, None, False
    for number, field in _fields(value, what):
        if number == 1:
            dtype_enum = field
        elif number == 2:  # TensorShapeProto: dim = 2 (Dim: size = 1), unknown_rank = 3
            for sub, dim in _fields(field, what):
                if sub == 2:
                    size_of_dim = 0
                    for dim_field, dim_value in _fields(dim, what):
                        if dim_field == 1:
                            size_of_dim = _int64(dim_value)
                    shape.append(size_of_dim)
                elif sub == 3 and dim:
                    raise CheckpointError(f"{path}: tensor `{name}` has an unknown rank.")
        elif number == 3:
            shard = field
        elif number == 4:
            offset = _int64(field)
        elif number == 5:
            size = _int64(field)
        elif number == 6:
            crc = field
        elif number == 7:
            sliced = True
    if sliced:
        raise CheckpointError(
            f"{path}: tensor `{name}` is a partitioned variable (saved in slices), which this reader "
            "does not support."
        )
    if dtype_enum in NUMPY_DTYPES:
        dtype = NUMPY_DTYPES[dtype_enum].name
    else:
        dtype = OTHER_DTYPES.get(dtype_enum, f"DataType {dtype_enum}")
    if any(d < 0 for d in shape) or offset < 0 or size < 0:
        raise CheckpointError(
            f"{path} is corrupt: tensor `{name}` has shape {shape}, offset {offset}, size {size}."
        )
    info = TensorInfo(name, dtype, tuple(shape), shard, offset, size, crc)
    if info.numpy_dtype is not None:
        expected = int(np.prod(shape, dtype=np.int64)) * info.numpy_dtype.itemsize
        if size != expected:
            raise CheckpointError(
                f"{path} is corrupt: tensor `{name}` ({dtype} {list(shape)}) should take {expected} bytes, "
                f"its entry says {size}."
            )
    return info


class TFCheckpoint:
    """A TensorFlow V2 checkpoint opened for reading. `prefix` is the path without `.index`
    (`folder/model.ckpt`); a folder is taken to hold the checkpoint its `checkpoint` file names.

    The index is read and checked when it is opened; the data files when first needed.
    `tensors` maps each name to its `TensorInfo`, in key order.
    """

    def __init__(self, prefix: str | os.PathLike):
        prefix = Path(prefix)
        if prefix.is_dir():
            prefix = latest_checkpoint(prefix)
        self.prefix = prefix
        self.index_path = Path(f"{prefix}.index")
        if not self.index_path.is_file():
            hint = " (a TF1 V1 checkpoint, which this reader does not read?)" if prefix.is_file() else ""
            raise CheckpointError(f"checkpoint index {self.index_path} not found{hint}.")
        entries = read_table(self.index_path)
        if not entries or entries[0][0] != b"":
            raise CheckpointError(f"{self.index_path} is corrupt: it has no bundle header entry.")
        try:
            self.num_shards, self.big_endian = _parse_header(entries[0][1], self.index_path)
            tensors = {}
            for key, value in entries[1:]:
                try:
                    name = key.decode("utf-8")
                except UnicodeDecodeError:
                    raise CheckpointError(f"{self.index_path} is corrupt: a key is not UTF-8.") from None
                tensors[name] = info = _parse_entry(name, value, self.index_path)
                if info.shard >= self.num_shards:
                    raise CheckpointError(
                        f"{self.index_path} is corrupt: tensor `{name}` is in data file {info.shard}, "
                        f"but the header says there are {self.num_shards}."
                    )
        except ValueError as e:
            if isinstance(e, CheckpointError):
                raise
            raise CheckpointError(f"{self.index_path} is corrupt: {e}.") from None
        self.tensors: dict[str, TensorInfo] = tensors
        self._crc = fast_crc32c()
        self._maps: dict[int, mmap.mmap | bytes] = {}

    @property
    def verifies_data(self) -> bool:
        """Whether `read` checks each tensor's crc32c (a fast crc32c package is installed)."""
        return self._crc is not None

    def data_path(self, shard: int) -> Path:
        return Path(f"{self.prefix}.data-{shard:05d}-of-{self.num_shards:05d}")

    @property
    def data_paths(self) -> list[Path]:
        return [self.data_path(shard) for shard in range(self.num_shards)]

    def nbytes(self) -> int:
        """The size of all tensors, in bytes."""
        return sum(info.size for info in self.tensors.values())

    def check_data_files(self) -> None:
        """Check that every data file exists and holds all of its tensors' bytes (cheap: sizes only)."""
        for shard in range(self.num_shards):
            self._map(shard)

    def _map(self, shard: int):
        if shard in self._maps:
            return self._maps[shard]
        path = self.data_path(shard)
        if not path.is_file():
            raise CheckpointError(
                f"checkpoint data file {path} not found (listed in {self.index_path.name})."
            )
        file_size = path.stat().st_size
        stored = sorted(
            (info for info in self.tensors.values() if info.shard == shard), key=lambda i: i.offset + i.size
        )
        past_end = [info for info in stored if info.offset + info.size > file_size]
        if past_end:
            info = past_end[0]
            raise CheckpointError(
                f"{path} is truncated: it has {file_size} bytes, but tensor `{info.name}` is stored at bytes "
                f"{info.offset}..{info.offset + info.size} ({len(past_end)} of its {len(stored)} tensors "
                "do not fit)."
            )
        if file_size == 0:
            self._maps[shard] = b""
        else:
            with open(path, "rb") as f:
                self._maps[shard] = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        return self._maps[shard]

    def read(self, name: str, verify: bool = True) -> np.ndarray:
        """The tensor `name` as a read-only numpy array backed by the memory-mapped data file (no
        copy; `.copy()` it to keep it after `close`). Its crc32c is checked when `verify` and a fast
        crc32c is installed."""
        if name not in self.tensors:
            raise CheckpointError(f"{self.index_path} has no tensor `{name}`.")
        info = self.tensors[name]
        dtype = info.numpy_dtype
        if dtype is None:
            raise CheckpointError(
                f"{self.index_path}: tensor `{name}` has dtype {info.dtype}, which this reader does not read."
            )
        buffer = self._map(info.shard)
        if info.size == 0:
            return np.empty(info.shape, dtype)
        if verify and self._crc is not None and info.crc32c is not None:
            actual = self._crc(memoryview(buffer)[info.offset : info.offset + info.size])
            if actual != unmask_crc(info.crc32c):
                raise CheckpointError(
                    f"{self.data_path(info.shard)} is corrupt: tensor `{name}` (bytes {info.offset}.."
                    f"{info.offset + info.size}) fails its crc32c checksum."
                )
        if self.big_endian:
            dtype = dtype.newbyteorder(">")
        count = info.size // dtype.itemsize
        return np.frombuffer(buffer, dtype=dtype, count=count, offset=info.offset).reshape(info.shape)

    def release(self, name: str) -> None:
        """Tell the OS that the pages of tensor `name` are no longer needed, so they stop counting
        toward this process's resident memory (they are read again from the file if used)."""
        info = self.tensors[name]
        buffer = self._maps.get(info.shard)
        if not isinstance(buffer, mmap.mmap) or not hasattr(mmap, "MADV_DONTNEED") or info.size == 0:
            return
        start = info.offset - info.offset % mmap.PAGESIZE
        end = min(info.offset + info.size, len(buffer))
        buffer.madvise(mmap.MADV_DONTNEED, start, end - start)

    def close(self) -> None:
        """Unmap the data files. Arrays that `read` returned must not be used afterwards; while
        any is still referenced, its file stays mapped until it is garbage-collected."""
        for buffer in self._maps.values():
            if isinstance(buffer, mmap.mmap):
                try:
                    buffer.close()
                except BufferError:  # an array still points into it; it unmaps when that is gone
                    pass
        self._maps.clear()

    def __enter__(self) -> "TFCheckpoint":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def latest_checkpoint(folder: str | os.PathLike) -> Path:
    """The checkpoint prefix that `folder/checkpoint` names (`model_checkpoint_path`), like
    `tf.train.latest_checkpoint`, except that it is always in `folder`: an absolute path (where it
    was saved) is taken by its base name. Without a `checkpoint` file, the folder's only `*.index`
    file."""
    folder = Path(folder)
    state = folder / "checkpoint"
    if state.is_file():
        text = state.read_text(encoding="utf-8", errors="replace")
        found = re.search(r'^\s*model_checkpoint_path\s*:\s*("(?:[^"\\]|\\.)*")', text, re.MULTILINE)
        if not found:
            raise CheckpointError(f"{state} has no model_checkpoint_path line.")
        try:
            named = json.loads(found.group(1))
        except json.JSONDecodeError:
            named = found.group(1)[1:-1]
        # Only the folder's own files: a relative path as written, an absolute one (where it was
        # saved) by its base name, so a copied or moved folder never reads another's checkpoint.
        candidate = folder / Path(named).name if os.path.isabs(named) else folder / named
        if not Path(f"{candidate}.index").is_file():
            raise CheckpointError(
                f"checkpoint index {candidate}.index not found ({state} names checkpoint {named})."
            )
        return candidate
    indexes = sorted(folder.glob("*.index"))
    if len(indexes) != 1:
        found = ", ".join(p.name for p in indexes) or "none"
        raise CheckpointError(
            f"{folder} has no `checkpoint` file and not exactly one *.index file ({found}); "
            "pass the checkpoint prefix (e.g. folder/model.ckpt)."
        )
    return indexes[0].with_suffix("")


def list_variables(prefix: str | os.PathLike) -> list[tuple[str, list[int]]]:
    """(name, shape) of every tensor, in name order, like `tf.train.list_variables`."""
    return [(info.name, list(info.shape)) for info in TFCheckpoint(prefix).tensors.values()]


def load_checkpoint(prefix: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every tensor of a checkpoint as a numpy array of its own (copied out of the files)."""
    with TFCheckpoint(prefix) as ckpt:
        arrays = {}
        for name in ckpt.tensors:
            arrays[name] = ckpt.read(name).astype(ckpt.tensors[name].dtype, order="C", copy=True)
            ckpt.release(name)
        return arrays
