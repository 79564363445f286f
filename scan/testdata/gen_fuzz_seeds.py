#!/usr/bin/python3
"""Writes the seed corpora of FuzzScanZip and FuzzNpyHeader from real
torch.save and np.save output (Debian's python3-torch and python3-numpy):
    /usr/bin/python3 gen_fuzz_seeds.py
Nothing here is unpickled; the seeds are small."""
import io, os, sys

import numpy as np
import torch

here = os.path.dirname(os.path.abspath(__file__))


def seed(fuzzer, name, data):
    d = os.path.join(here, "fuzz", fuzzer)
    os.makedirs(d, exist_ok=True)
    q = "".join(chr(b) if chr(b).isalnum() else "\\x%02x" % b for b in data)
    with open(os.path.join(d, name), "w") as f:
        f.write('go test fuzz v1\n[]byte("%s")\n' % q)


torch.manual_seed(0)
buf = io.BytesIO()
torch.save({"w": torch.ones(2, 2), "b": torch.zeros(2, dtype=torch.int64)}, buf)
seed("FuzzScanZip", "torch_save_zip", buf.getvalue())
buf = io.BytesIO()
torch.save({"w": torch.ones(2)}, buf, _use_new_zipfile_serialization=False)
seed("FuzzScanTar", "torch_save_legacy", buf.getvalue())
buf = io.BytesIO()
np.savez(buf, a=np.arange(3, dtype=np.int16), o=np.array([1, 2.5], dtype=object))
seed("FuzzScanZip", "np_savez", buf.getvalue())

arrays = {
    "plain": np.zeros((2, 3), dtype="<f4"),
    "fortran": np.asfortranarray(np.zeros((2, 3), dtype=">i8")),
    "object": np.array([1, 2.5, "x"], dtype=object),
    "structured": np.zeros(2, dtype=[("a", "<i4"), ("b", "O"), ("c", [("d", "<f8", (2,))])]),
    "titles": np.zeros(1, dtype={"names": ["a"], "formats": ["<u2"], "titles": ["T"]}),
    "padded": np.zeros(1, dtype={"names": ["a", "b"], "formats": ["<u1", "<u4"], "offsets": [0, 4], "itemsize": 12}),
    "datetime": np.array(["2020-01-01"], dtype="M8[D]"),
    "unicode": np.array(["ab"], dtype="<U2"),
}
for name, a in arrays.items():
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=True)
    b = buf.getvalue()
    hlen = int.from_bytes(b[8:10], "little")
    seed("FuzzNpyHeader", name, b[10:10 + hlen])
