"""TensorFlow's checkpoint format (a "tensor bundle"), read and written without TensorFlow.

A checkpoint `PREFIX` is two kinds of file:
  PREFIX.index                  a LevelDB table (sorted key -> value); key "" holds a BundleHeaderProto,
                                every other key is a tensor name holding a BundleEntryProto
  PREFIX.data-00000-of-0000N    the tensors' raw little-endian bytes, at the entries' offsets

The table is blocks of prefix-compressed entries, each block followed by a 1-byte compression type and
the masked CRC32C of block + type; a 48-byte footer at the end points at the index block, whose entries
point at the data blocks. BundleEntryProto fields: 1 dtype, 2 shape, 3 shard_id, 4 offset, 5 size,
6 crc32c (masked, of the tensor's bytes), 7 slices (partitioned variables). Sources: tensorflow/core/
util/tensor_bundle/tensor_bundle.{h,cc,proto} and tensorflow/core/lib/io/{format,block}.cc.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Callable
from pathlib import Path

import google_crc32c
import numpy as np

from bertkit.errors import BertkitError
from bertkit.outputs import atomic_write_bytes

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48  # two block handles (varints, padded to 40 bytes) + the magic number
# TensorFlow DataType enum -> numpy dtype (bfloat16 is read as its upper 16 bits of a float32).
DTYPES: dict[int, type | str] = {
    1: np.float32,
    2: np.float64,
    3: np.int32,
    4: np.uint8,
    5: np.int16,
    6: np.int8,
    9: np.int64,
    10: np.bool_,
    14: "bfloat16",
    19: np.float16,
}
DTYPE_CODES = {np.dtype(v): k for k, v in DTYPES.items() if not isinstance(v, str)}


def masked_crc32c(data: bytes) -> int:
    """LevelDB's masked CRC32C: a CRC stored next to data that itself holds CRCs stays checkable."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# ---- protobuf wire format: varints, and messages as {field number: [values]} ----


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _encode_varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int64s are ten-byte two's complement, as protobuf does
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _decode_message(data: bytes) -> dict[int, list]:
    fields: dict[int, list] = {}
    pos = 0
    while pos < len(data):
        tag, pos = _varint(data, pos)
        number, wire = tag >> 3, tag & 7
        value: int | bytes
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 1:
            value, pos = struct.unpack_from("<Q", data, pos)[0], pos + 8
        elif wire == 2:
            length, pos = _varint(data, pos)
            value, pos = data[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = struct.unpack_from("<I", data, pos)[0], pos + 4
        else:
            raise ValueError(f"protobuf wire type {wire}")
        fields.setdefault(number, []).append(value)
    return fields


def _field(number: int, value: int | bytes, fixed32: bool = False) -> bytes:
    if isinstance(value, bytes):
        return _encode_varint(number << 3 | 2) + _encode_varint(len(value)) + value
    if fixed32:
        return _encode_varint(number << 3 | 5) + struct.pack("<I", value)
    return _encode_varint(number << 3) + _encode_varint(value)


# ---- the LevelDB table ----


def _read_block(data: bytes, offset: int, size: int, path: Path) -> bytes:
    if offset + size + 5 > len(data):
        raise BertkitError(f"{path} is truncated (a block ends past the end of the file): copy it again")
    block, kind = data[offset : offset + size], data[offset + size]
    stored = struct.unpack_from("<I", data, offset + size + 1)[0]
    if masked_crc32c(data[offset : offset + size + 1]) != stored:
        raise BertkitError(f"{path}: block checksum mismatch at byte {offset}: the file is corrupt; copy it again")
    if kind != 0:
        raise BertkitError(
            f"{path}: compressed table blocks (type {kind}) are not supported; TensorFlow "
            "writes checkpoint indexes uncompressed, so this is probably not a checkpoint"
        )
    return block


def _block_entries(block: bytes):
    num_restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    limit, pos, key = len(block) - 4 * (num_restarts + 1), 0, b""
    while pos < limit:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        length, pos = _varint(block, pos)
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        yield key, block[pos : pos + length]
        pos += length


def _read_table(path: Path) -> dict[bytes, bytes]:
    data = path.read_bytes()
    if len(data) < FOOTER_SIZE or struct.unpack_from("<Q", data, len(data) - 8)[0] != TABLE_MAGIC:
        raise BertkitError(
            f"{path} is not a TensorFlow checkpoint index (no table footer): pass the "
            "checkpoint prefix, e.g. bert_model.ckpt, or its .index file"
        )
    footer = data[-FOOTER_SIZE:]
    _, pos = _varint(footer, 0)  # metaindex handle: unused by tensor bundles
    _, pos = _varint(footer, pos)
    index_offset, pos = _varint(footer, pos)
    index_size, pos = _varint(footer, pos)
    table = {}
    for _, handle in _block_entries(_read_block(data, index_offset, index_size, path)):
        offset, p = _varint(handle, 0)
        size, _ = _varint(handle, p)
        table.update(_block_entries(_read_block(data, offset, size, path)))
    return table


def _block(entries: list[tuple[bytes, bytes]]) -> bytes:
    """One block, every entry a restart point (no prefix sharing): simple, and valid for any reader."""
    out, restarts = bytearray(), []
    for key, value in entries:
        restarts.append(len(out))
        out += _encode_varint(0) + _encode_varint(len(key)) + _encode_varint(len(value)) + key + value
    restarts = restarts or [0]
    return bytes(out) + struct.pack(f"<{len(restarts)}I", *restarts) + struct.pack("<I", len(restarts))


def _table(entries: list[tuple[bytes, bytes]]) -> bytes:
    out = bytearray()

    def add(block: bytes) -> bytes:
        handle = _encode_varint(len(out)) + _encode_varint(len(block))
        out.extend(block + b"\x00" + struct.pack("<I", masked_crc32c(block + b"\x00")))
        return handle

    data_handle = add(_block(entries))
    meta_handle = add(_block([]))
    index_handle = add(_block([(entries[-1][0], data_handle)]))
    footer = (meta_handle + index_handle).ljust(FOOTER_SIZE - 8, b"\x00") + struct.pack("<Q", TABLE_MAGIC)
    return bytes(out + footer)


# ---- bundles ----


def resolve_prefix(path: str | Path) -> Path:
    """A checkpoint prefix from a prefix, its .index file, or a directory holding one checkpoint."""
    p = Path(path)
    if p.name.endswith(".index"):
        p = p.with_name(p.name[: -len(".index")])
    if p.is_dir():
        latest = p / "checkpoint"  # written by tf.train.Saver: model_checkpoint_path: "model.ckpt-1000"
        if latest.is_file():
            for line in latest.read_text(encoding="utf-8").splitlines():
                if line.startswith("model_checkpoint_path:"):
                    name = line.split(":", 1)[1].strip().strip('"')
                    return p / name if not Path(name).is_absolute() else Path(name)
        indexes = sorted(p.glob("*.index"))
        if len(indexes) != 1:
            found = ", ".join(i.name for i in indexes) or "none"
            raise BertkitError(
                f"{p}: expected one TensorFlow checkpoint (*.index), found {found}; "
                "pass the prefix of the one to use, e.g. DIR/bert_model.ckpt"
            )
        return indexes[0].with_name(indexes[0].name[: -len(".index")])
    if not p.with_name(p.name + ".index").is_file():
        raise BertkitError(
            f"{p}.index not found: pass a TensorFlow checkpoint prefix (DIR/bert_model.ckpt, "
            "next to bert_model.ckpt.index and bert_model.ckpt.data-00000-of-00001)"
        )
    return p


def _index(prefix: Path) -> tuple[int, dict[str, dict]]:
    """(number of data shards, {tensor name: decoded BundleEntryProto}) from PREFIX.index."""
    index = prefix.with_name(prefix.name + ".index")
    table = _read_table(index)
    header = _decode_message(table.pop(b"", b""))
    if header.get(2, [0])[0] != 0:
        raise BertkitError(f"{index}: big-endian checkpoints are not supported")
    return header.get(1, [1])[0], {k.decode("utf-8"): _decode_message(v) for k, v in sorted(table.items())}


def bundle_names(path: str | Path) -> list[str]:
    """The tensor names of a TensorFlow checkpoint, from its index alone."""
    return list(_index(resolve_prefix(path))[1])


def read_bundle(path: str | Path, skip: Callable[[str], bool] | None = None) -> dict[str, np.ndarray]:
    """The tensors of a TensorFlow checkpoint by variable name, checksums verified. Tensors whose name
    `skip` accepts (e.g. optimizer slots, twice the model's size) are never read from disk."""
    prefix = resolve_prefix(path)
    num_shards, entries = _index(prefix)
    index = prefix.with_name(prefix.name + ".index")
    tensors = {}
    with contextlib.ExitStack() as stack:
        shards = {}
        for name, entry in entries.items():
            if skip is not None and skip(name):
                continue
            if 7 in entry:
                raise BertkitError(
                    f"{index}: `{name}` is a partitioned variable (saved in slices); "
                    "re-save it unpartitioned with TensorFlow first"
                )
            dtype_code = entry.get(1, [0])[0]
            if dtype_code not in DTYPES:
                raise BertkitError(
                    f"{index}: `{name}` has TensorFlow dtype {dtype_code} (e.g. 7 = string), "
                    "which no BERT weight uses; only numeric tensors are read"
                )
            shape = (
                [_decode_message(d).get(1, [0])[0] for d in _decode_message(entry[2][0]).get(2, [])]
                if 2 in entry
                else []
            )
            shard, offset, size = (entry.get(k, [0])[0] for k in (3, 4, 5))
            if shard not in shards:
                data_file = prefix.with_name(f"{prefix.name}.data-{shard:05d}-of-{num_shards:05d}")
                if not data_file.is_file():
                    raise BertkitError(f"{data_file} not found: a checkpoint's .index needs its .data files beside it")
                shards[shard] = stack.enter_context(open(data_file, "rb"))
            shards[shard].seek(offset)
            raw = shards[shard].read(size)
            if len(raw) != size:
                raise BertkitError(f"{prefix}.data-{shard:05d}: truncated at `{name}`; copy the checkpoint again")
            if 6 in entry and masked_crc32c(raw) != entry[6][0]:
                raise BertkitError(f"{prefix}: checksum mismatch for `{name}`: the data file is corrupt; copy it again")
            tensors[name] = _decode_tensor(raw, DTYPES[dtype_code], shape)
    return tensors


def _decode_tensor(raw: bytes, dtype, shape: list[int]) -> np.ndarray:
    if dtype == "bfloat16":  # the upper half of a float32
        return (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32).reshape(shape)
    return np.frombuffer(raw, np.dtype(dtype).newbyteorder("<")).reshape(shape).copy()


def write_bundle(tensors: dict[str, np.ndarray], prefix: str | Path) -> Path:
    """Write `tensors` as PREFIX.index + PREFIX.data-00000-of-00001 (each atomically) and a
    `checkpoint` file naming it, as tf.train.Saver would."""
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    data, entries = bytearray(), []
    for name in sorted(tensors):
        array = np.asarray(tensors[name])  # tobytes() below writes C order; 0-d stays 0-d
        if array.dtype not in DTYPE_CODES:
            raise BertkitError(f"`{name}` has dtype {array.dtype}, which a TensorFlow checkpoint cannot hold here")
        raw = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        shape = b"".join(_field(2, _field(1, d) if d else b"") for d in array.shape)
        entry = (
            _field(1, DTYPE_CODES[array.dtype])
            + _field(2, shape)
            + _field(4, len(data))
            + _field(5, len(raw))
            + _field(6, masked_crc32c(raw), fixed32=True)
        )
        entries.append((name.encode("utf-8"), entry))
        data += raw
    header = _field(1, 1) + _field(3, _field(1, 1))  # one shard, little-endian, format version 1
    _atomic_write(prefix.with_name(prefix.name + ".data-00000-of-00001"), bytes(data))
    _atomic_write(prefix.with_name(prefix.name + ".index"), _table([(b"", header)] + entries))
    _atomic_write(
        prefix.parent / "checkpoint",
        f'model_checkpoint_path: "{prefix.name}"\nall_model_checkpoint_paths: "{prefix.name}"\n'.encode(),
    )
    return prefix


_atomic_write = atomic_write_bytes
