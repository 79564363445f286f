package launcher

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/securetrain/securetrain/configs"
	"github.com/securetrain/securetrain/internal/testenv"
	"github.com/securetrain/securetrain/sandbox"
)

const nobody = 65534

// confineFixture is a code directory and a dataset readable by nobody, and
// a launcher whose state lives in the test's directory, under parent.
func confineFixture(t *testing.T, parent string) (*Launcher, *plan, string, *Handle) {
	t.Helper()
	testenv.RequireRoot(t)
	dir, err := os.MkdirTemp(parent, "st-confine-") // t.TempDir's parent is 0700
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	code := filepath.Join(dir, "code")
	data := filepath.Join(dir, "data")
	for _, d := range []string{code, data} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.Chown(code, nobody, nobody)
	if err := os.WriteFile(filepath.Join(data, "orig"), []byte("checked"), 0o644); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(dir, "state")
	l := &Launcher{Host: &configs.Host{StateDir: state}}
	h, err := l.Store().Create(JobState{ID: "confinetest1"})
	if err != nil {
		t.Fatal(err)
	}
	pl := &plan{
		req:       Request{Caller: Caller{UID: nobody, GID: nobody, Name: "nobody"}, Data: []DataMount{{Source: data, Target: "/data/x"}}, Confine: true},
		codeDir:   code,
		outputDir: filepath.Join(code, "outputs"),
		mounts:    []sandbox.Mount{{Kind: sandbox.Bind, Source: data, Target: "/data/x", ReadOnly: true}},
	}
	return l, pl, data, h
}

// TestConfineMountsWhatWasChecked: after the check, swapping the dataset
// for a symlink to /root changes nothing: the staged mount is the directory
// that was checked, read-only; teardown removes every staging mount. A
// dataset under /opt (a user-writable place in a host system directory) is
// staged the same way.
func TestConfineMountsWhatWasChecked(t *testing.T) {
	for _, parent := range []string{"/tmp", "/opt"} {
		t.Run(parent, func(t *testing.T) { testConfineMountsWhatWasChecked(t, parent) })
	}
}

func testConfineMountsWhatWasChecked(t *testing.T, parent string) {
	l, pl, data, h := confineFixture(t, parent)
	var undo cleanup
	undo.push(h.Remove)
	defer undo.run()
	staged, err := l.stage("confinetest1", pl, h, &undo)
	if err != nil {
		t.Fatal(err)
	}
	point := staged[data]
	if point == "" || staged[pl.codeDir] == "" || staged[pl.outputDir] == "" {
		t.Fatalf("staged = %v", staged)
	}
	var st unix.Stat_t
	if err := unix.Stat(pl.outputDir, &st); err != nil || st.Uid != nobody {
		t.Fatalf("outputs must be created as the job's user: uid %d, %v", st.Uid, err)
	}
	// The attack: replace the checked directory by a link to /root.
	if err := os.Rename(data, data+".old"); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/root", data); err != nil {
		t.Fatal(err)
	}
	ms := []sandbox.Mount{{Kind: sandbox.Bind, Source: data, Target: "/data/x", ReadOnly: true}}
	ms = staged.sources(ms)
	if ms[0].Source != point {
		t.Fatalf("mount source = %s, want the staging point %s", ms[0].Source, point)
	}
	b, err := os.ReadFile(filepath.Join(ms[0].Source, "orig"))
	if err != nil || string(b) != "checked" {
		t.Fatalf("the staged mount is not the checked directory: %q %v", b, err)
	}
	if err := os.WriteFile(filepath.Join(point, "new"), nil, 0o644); !errors.Is(err, unix.EROFS) {
		t.Errorf("a read-only mount's staging point must be read-only, write gave %v", err)
	}
	if _, err := undo.run(); err != nil {
		t.Fatal(err)
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mi), filepath.Join(l.Host.StateDir, "stage")) {
		t.Errorf("staging mounts left after teardown")
	}
	if _, err := os.Stat(filepath.Join(l.Host.StateDir, "stage", "confinetest1")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("staging directory left after teardown: %v", err)
	}
	if _, err := os.Stat(filepath.Join(data+".old", "orig")); err != nil {
		t.Errorf("teardown touched the user's data: %v", err)
	}
}

// TestConfineRefuses: paths the caller could not open themselves.
func TestConfineRefuses(t *testing.T) {
	for _, c := range []struct {
		name string
		mod  func(pl *plan, data string)
		want string
	}{
		{"unreadable mount source", func(pl *plan, _ string) { pl.mounts[0].Source, pl.mounts[0].Target = "/root", "/opt/venv" }, "interpreter environment /root: user nobody cannot read it"},
		{"symlink to /root", func(pl *plan, data string) {
			os.RemoveAll(data)
			os.Symlink("/root", data)
		}, "--data " + "DATA" + " -> " + "DATA" + ": user nobody cannot read it (it resolves to /root)"},
		{"unwritable output", func(pl *plan, _ string) { pl.outputDir = "/etc" }, "output /etc: user nobody cannot write it"},
		{"report directory", func(pl *plan, _ string) { pl.req.ReportPath = "/root/r.json" }, "--report /root/r.json: user nobody cannot write it"},
	} {
		t.Run(c.name, func(t *testing.T) {
			l, pl, data, h := confineFixture(t, "/tmp")
			c.mod(pl, data)
			var undo cleanup
			undo.push(h.Remove)
			_, err := l.stage("confinetest1", pl, h, &undo)
			if _, rerr := undo.run(); rerr != nil {
				t.Errorf("undo: %v", rerr)
			}
			want := strings.ReplaceAll(c.want, "DATA", data)
			if err == nil || !strings.Contains(err.Error(), want) || !errors.Is(err, ErrNotPermitted) {
				t.Fatalf("got %v, want a refusal holding %q", err, want)
			}
		})
	}
}
