#!/usr/bin/python3
"""Oracle for the scanner's .npy header reader: reads one JSON string (a
header's text) per line on stdin and prints what numpy's own reader makes
of it: "obj" (the dtype holds Python objects, np.load would unpickle),
"ok" (a plain array), or "err <why>" (np.load refuses the file)."""
import io, json, struct, sys, warnings

from numpy.lib import format as npformat

warnings.simplefilter("ignore")
for line in sys.stdin:
    text = json.loads(line)
    hdr = text.encode("latin-1")
    try:
        _, _, dtype = npformat._read_array_header(io.BytesIO(struct.pack("<H", len(hdr)) + hdr), (1, 0))
        print("obj" if dtype.hasobject else "ok")
    except Exception as e:  # anything numpy raises means np.load refuses
        print("err", type(e).__name__, str(e).replace("\n", " ")[:80])
    sys.stdout.flush()
