package sandbox

import "os"

// fileMode is a device's OCI fileMode: the permission bits only, as runc and
// the runtime-spec tools write it. The node type is the device's "type"
// field; os.ModeDevice|os.ModeCharDevice here would put Go-only high bits
// into the mode a runtime passes to mknod(2).
func fileMode(m uint32) os.FileMode { return os.FileMode(m).Perm() }
