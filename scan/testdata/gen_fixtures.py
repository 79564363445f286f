#!/usr/bin/python3
"""Writes the scanner's test fixtures. Run with Debian's interpreter, which
has PyTorch (python3-torch):  /usr/bin/python3 gen_fixtures.py [OUTDIR]

Nothing here is ever unpickled: the "evil" objects are only pickled, so their
payloads (harmless `echo` commands anyway) never run. The fuzz seed corpus in
fuzz/FuzzScanPickle is written from the same pickles.
"""
import gzip, io, os, pickle, struct, subprocess, sys, zipfile, json

import numpy as np
import torch

out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
fuzzdir = None if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "fuzz", "FuzzScanPickle")
os.makedirs(out, exist_ok=True)
torch.manual_seed(0)


def w(name, data):
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)


class EvilSystem:
    def __reduce__(self):
        return (os.system, ("echo pwned-by-os-system",))


class EvilEval:
    def __reduce__(self):
        return (eval, ("print('pwned-by-eval')",))


class EvilPopen:
    def __reduce__(self):
        return (subprocess.Popen, (["echo", "pwned-by-popen"],))


# Safe, real checkpoints.
model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                            torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 10))
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
model(torch.randn(2, 3, 8, 8)).sum().backward()
opt.step()
sgd = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
model(torch.randn(2, 3, 8, 8)).sum().backward()
sgd.step()

torch.save(model.state_dict(), os.path.join(out, "safe_state_dict.pt"))
torch.save(opt.state_dict(), os.path.join(out, "safe_adam_state.pt"))
torch.save(sgd.state_dict(), os.path.join(out, "safe_sgd_state.pt"))
torch.save({"epoch": 3, "model": model.state_dict(), "optimizer": opt.state_dict(),
            "half": torch.ones(3, dtype=torch.float16), "ids": torch.arange(4),
            "size": torch.Size([2, 3]), "np": np.arange(3, dtype=np.float32), "dtype": torch.float32},
           os.path.join(out, "safe_checkpoint.pt"))
torch.save(model.state_dict(), os.path.join(out, "safe_legacy.pt"), _use_new_zipfile_serialization=False)
torch.save(model.state_dict(), os.path.join(out, "safe_legacy_p4.pt"), _use_new_zipfile_serialization=False, pickle_protocol=4)

# NumPy and safetensors.
buf = io.BytesIO(); np.save(buf, np.arange(12, dtype="<f4").reshape(3, 4)); w("safe_array.npy", buf.getvalue())
buf = io.BytesIO(); np.save(buf, np.array([1, "two", 3.0], dtype=object), allow_pickle=True); w("safe_object_array.npy", buf.getvalue())
buf = io.BytesIO(); np.savez(buf, a=np.zeros(4), b=np.ones((2, 2), dtype=np.int64)); w("safe_arrays.npz", buf.getvalue())
for p in range(0, 6):
    w("safe_numpy_proto%d.pkl" % p, pickle.dumps({"a": np.arange(5), "s": np.float64(2.5), "set": {1, 2}}, protocol=p))


def safetensors(tensors, meta=None):
    hdr, data = {}, b""
    if meta:
        hdr["__metadata__"] = meta
    for name, (dt, shape, raw) in tensors.items():
        hdr[name] = {"dtype": dt, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    h = json.dumps(hdr).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


w("safe.safetensors", safetensors({"w": ("F32", [2, 2], struct.pack("<4f", 1, 2, 3, 4)),
                                    "b": ("I64", [1], struct.pack("<q", 7))}, {"format": "pt"}))
w("bad_offsets.safetensors", safetensors({"w": ("F32", [2, 3], struct.pack("<4f", 1, 2, 3, 4))}))

# Dangerous pickles.
w("evil_os_system_p2.pkl", pickle.dumps(EvilSystem(), protocol=2))
w("evil_eval_p4.pkl", pickle.dumps(EvilEval(), protocol=4))
w("evil_popen_p3.pkl", pickle.dumps(EvilPopen(), protocol=3))
w("evil_os_system_p5.pkl", pickle.dumps({"weights": [1.0], "x": EvilSystem()}, protocol=5))
w("evil_proto0.pkl", pickle.dumps(EvilSystem(), protocol=0))
w("evil_proto1.pkl", pickle.dumps(EvilEval(), protocol=1))
w("evil_inst_proto0.pkl", b"(S'echo pwned-by-inst'\nios\nsystem\n.")
# STACK_GLOBAL whose strings come from the memo (MEMOIZE/BINGET), as pickle
# writes them when a name repeats.
w("evil_memo_stack_global.pkl", b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00"
  b"\x8c\x08builtins\x94\x8c\x04eval\x94\x93\x94h\x00h\x01\x93\x8c\x0eprint('pwned')\x85R.")
# A real torch checkpoint with a payload nested in the state.
sd = model.state_dict()
sd["_extra"] = EvilSystem()
torch.save(sd, os.path.join(out, "evil_nested.pt"))
torch.save({"model": model.state_dict(), "cb": EvilPopen()}, os.path.join(out, "evil_nested_legacy.pt"),
           _use_new_zipfile_serialization=False)
buf = io.BytesIO(); np.save(buf, np.array([EvilSystem()], dtype=object), allow_pickle=True); w("evil_object_array.npy", buf.getvalue())
buf = io.BytesIO(); np.savez(buf, ok=np.zeros(2), evil=np.array([EvilEval()], dtype=object)); w("evil_arrays.npz", buf.getvalue())

# Unsupported and malformed.
w("unsupported_gzip.pkl.gz", gzip.compress(pickle.dumps(EvilSystem(), protocol=4), mtime=0))
kz = io.BytesIO()
with zipfile.ZipFile(kz, "w") as z:
    z.writestr("config.json", '{"class_name": "Sequential"}')
    z.writestr("metadata.json", "{}")
    z.writestr("model.weights.h5", b"\x89HDF\r\n\x1a\n")
w("unsupported_keras.keras", kz.getvalue())
good = open(os.path.join(out, "safe_state_dict.pt"), "rb").read()
w("malformed_truncated.pt", good[: len(good) // 2])
pk = pickle.dumps({"a": [1, 2, 3], "b": "text"}, protocol=4)
w("malformed_truncated.pkl", pk[:-7])
w("malformed_random.bin", bytes((i * 7919 + 13) % 251 for i in range(4096)))

if fuzzdir:
    os.makedirs(fuzzdir, exist_ok=True)

    def seed(name, data):
        q = "".join(chr(b) if chr(b).isalnum() else "\\x%02x" % b for b in data)
        with open(os.path.join(fuzzdir, name), "w") as f:
            f.write('go test fuzz v1\n[]byte("%s")\n' % q)

    for fn in sorted(os.listdir(out)):
        if fn.endswith(".pkl"):
            seed(fn, open(os.path.join(out, fn), "rb").read())
    for fn in ("safe_state_dict.pt", "evil_nested.pt"):
        with zipfile.ZipFile(os.path.join(out, fn)) as z:
            for n in z.namelist():
                if n.endswith("data.pkl"):
                    seed(fn + ".data.pkl", z.read(n))
    seed("legacy.pt", open(os.path.join(out, "safe_legacy.pt"), "rb").read()[:2048])
    seed("empty", b"")
    seed("proto5_frame", pickle.dumps([b"x" * 10, bytearray(b"y"), {1, 2}, frozenset([3])], protocol=5))
