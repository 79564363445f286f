package launcher

import (
	"runtime"

	"golang.org/x/sys/unix"
)

// asUser runs fn on a locked OS thread whose file-system identity (fsuid,
// fsgid, supplementary groups) is the job's user, so paths the user names are
// created and checked with the user's own permissions, never root's. These
// ids are per thread in Linux; the thread is restored before it is unlocked.
func asUser(uid, gid int, groups []int, fn func() error) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	oldGroups, err := unix.Getgroups()
	if err != nil {
		return err
	}
	gs := make([]uint32, 0, len(groups)+1)
	gs = append(gs, uint32(gid))
	for _, g := range groups {
		gs = append(gs, uint32(g))
	}
	if err := setgroupsThread(gs); err != nil {
		return err
	}
	unix.Setfsgid(gid)
	unix.Setfsuid(uid)
	defer func() {
		unix.Setfsuid(0)
		unix.Setfsgid(0)
		og := make([]uint32, len(oldGroups))
		for i, g := range oldGroups {
			og[i] = uint32(g)
		}
		setgroupsThread(og)
	}()
	return fn()
}

// setgroupsThread calls setgroups(2) directly: the kernel applies it to the
// calling thread only (glibc and Go's syscall.Setgroups broadcast it).
func setgroupsThread(gs []uint32) error {
	var p *uint32
	if len(gs) > 0 {
		p = &gs[0]
	}
	_, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, uintptr(len(gs)), uintptr(unsafePointer(p)), 0)
	if e != 0 {
		return e
	}
	return nil
}
