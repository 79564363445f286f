package sandbox

import "os"

func fileMode(m uint32) os.FileMode { return os.FileMode(m) | os.ModeDevice | os.ModeCharDevice }
