"""Converts a PyTorch checkpoint in the legacy (pre-zip) serialisation format to safetensors,
with the Python standard library only (no torch, no numpy).

Usage: python3 torch_legacy_to_safetensors.py INPUT.pth OUTPUT.safetensors

The legacy format is a sequence of pickles: a magic number, the protocol version, system info,
the object itself (a state dict whose tensors refer to storages by persistent id), the list of
storage keys, then each storage's raw little-endian bytes preceded by its element count.
Python's pickle module does the parsing; this file only maps torch's classes to plain records.
"""

import collections
import json
import pickle
import struct
import sys

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

# torch storage class -> (safetensors dtype, bytes per element)
STORAGE_TYPES = {
    "FloatStorage": ("F32", 4),
    "DoubleStorage": ("F64", 8),
    "HalfStorage": ("F16", 2),
    "BFloat16Storage": ("BF16", 2),
    "LongStorage": ("I64", 8),
    "IntStorage": ("I32", 4),
    "ShortStorage": ("I16", 2),
    "CharStorage": ("I8", 1),
    "ByteStorage": ("U8", 1),
    "BoolStorage": ("BOOL", 1),
}


class StorageType:
    def __init__(self, name):
        if name not in STORAGE_TYPES:
            raise ValueError(f"unsupported storage type torch.{name}")
        self.dtype, self.itemsize = STORAGE_TYPES[name]


class Storage:
    def __init__(self, storage_type, numel):
        self.type = storage_type
        self.numel = numel
        self.data = None


class TensorRecord:
    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)


def rebuild_tensor(storage, storage_offset, size, stride, *_rest):
    return TensorRecord(storage, storage_offset, size, stride)


class LegacyUnpickler(pickle.Unpickler):
    def __init__(self, file, storages):
        super().__init__(file)
        self.storages = storages

    def find_class(self, module, name):
        if module == "torch._utils" and name in ("_rebuild_tensor", "_rebuild_tensor_v2"):
            return rebuild_tensor
        if module == "torch" and name.endswith("Storage"):
            return StorageType(name)
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        raise pickle.UnpicklingError(f"unsupported global {module}.{name}")

    def persistent_load(self, pid):
        kind, storage_type, key, _location, numel = pid[:5]
        if kind != "storage":
            raise pickle.UnpicklingError(f"unsupported persistent id kind {kind!r}")
        if key not in self.storages:
            self.storages[key] = Storage(storage_type, numel)
        return self.storages[key]


def contiguous_strides(size):
    strides, step = [], 1
    for dim in reversed(size):
        strides.append(step)
        step *= dim
    return tuple(reversed(strides))


def tensor_bytes(t):
    itemsize = t.storage.type.itemsize
    numel = 1
    for d in t.size:
        numel *= d
    if t.stride == contiguous_strides(t.size) or numel <= 1:
        start = t.offset * itemsize
        return t.storage.data[start : start + numel * itemsize]
    out = bytearray()  # strided view: gather element by element
    index = [0] * len(t.size)
    for _ in range(numel):
        at = t.offset + sum(i * s for i, s in zip(index, t.stride))
        out += t.storage.data[at * itemsize : (at + 1) * itemsize]
        for d in reversed(range(len(index))):
            index[d] += 1
            if index[d] < t.size[d]:
                break
            index[d] = 0
    return bytes(out)


def convert(src, dst):
    storages = {}
    with open(src, "rb") as f:
        if pickle.load(f) != LEGACY_MAGIC:
            raise SystemExit(f"{src}: not a legacy torch checkpoint (zip checkpoints need another reader)")
        pickle.load(f)  # protocol version
        pickle.load(f)  # system info
        state = LegacyUnpickler(f, storages).load()
        keys = pickle.load(f)
        for key in keys:
            (numel,) = struct.unpack("<q", f.read(8))
            storage = storages[key]
            storage.data = f.read(numel * storage.type.itemsize)
            if len(storage.data) != numel * storage.type.itemsize:
                raise SystemExit(f"{src}: truncated storage {key}")
    if "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    header, blobs, offset = {}, [], 0
    for name, t in state.items():
        if not isinstance(t, TensorRecord):
            continue
        data = tensor_bytes(t)
        header[name] = {"dtype": t.storage.type.dtype, "shape": list(t.size), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    header_bytes = json.dumps(header, separators=(",", ":")).encode()
    header_bytes += b" " * (-len(header_bytes) % 8)
    with open(dst + ".part", "wb") as out:
        out.write(struct.pack("<Q", len(header_bytes)))
        out.write(header_bytes)
        for blob in blobs:
            out.write(blob)
    import os

    os.replace(dst + ".part", dst)
    print(f"{dst}: {len(header)} tensors")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: torch_legacy_to_safetensors.py INPUT.pth OUTPUT.safetensors")
    convert(sys.argv[1], sys.argv[2])
