"""Differential oracle for the scanner: for each file named on stdin, unpickle
it with CPython's own unpicklers (the C one torch uses, and pickle.py), with
find_class replaced by a recorder that returns an inert stand-in, so nothing is
imported or run. Prints one JSON line per file: the names find_class was asked
for ([module, name] pairs), by either unpickler, in the order asked. Run by differential_test.go."""
import io, json, pickle, sys


class Inert:
    def __new__(cls, *a, **k):
        return object.__new__(cls)

    def __init__(self, *a, **k):
        pass

    def __call__(self, *a, **k):
        return Inert()

    def __setstate__(self, state):
        pass

    def append(self, x):
        pass

    def extend(self, x):
        pass

    def add(self, x):
        pass

    def __setitem__(self, k, v):
        pass


def record(base):
    class R(base):
        def find_class(self, module, name):
            self.log.append([module, name])
            return Inert

        def persistent_load(self, pid):
            return Inert()

    return R


def imports(data):
    seen = []
    for base in (pickle.Unpickler, pickle._Unpickler):
        f = io.BytesIO(data)
        for _ in range(8):  # sequences (legacy torch): a few pickles
            u = record(base)(f, encoding="utf-8")
            u.log = []
            try:
                u.load()
            except BaseException:
                seen.extend(u.log)
                break
            seen.extend(u.log)
            if f.tell() >= len(data):
                break
    return seen


import resource, time

# A mutated length can ask for gigabytes: fail such allocations fast.
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
for line in sys.stdin:
    path = line.rstrip("\n")
    with open(path, "rb") as fh:
        t0 = time.monotonic()
        print(json.dumps({"path": path, "imports": imports(fh.read())}), flush=True)
        if time.monotonic() - t0 > 0.2:
            print("slow: %s %.2fs" % (path, time.monotonic() - t0), file=sys.stderr)
