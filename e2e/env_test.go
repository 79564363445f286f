package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestVirtualenvUnderSudo: sudo resets PATH and drops VIRTUAL_ENV, so the
// venv is found from the interpreter path in the command or --python.
func TestVirtualenvUnderSudo(t *testing.T) {
	e := setup(t)
	py := pythonWithTorch(t)
	venv, err := os.MkdirTemp("/tmp", "st-e2e-venv-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(venv) })
	os.Chmod(venv, 0o755)
	if out, err := exec.Command(py, "-m", "venv", "--without-pip", "--system-site-packages", venv).CombinedOutput(); err != nil {
		testenvMissingVenv(t, err, out)
	}
	dir := e.project(t, map[string]string{"where.py": "import sys, torch\nprint('prefix', sys.prefix)\n"})
	// 1. The interpreter path in the command.
	r := e.job(t, dir, nil, filepath.Join(venv, "bin", "python"), "where.py")
	if r.code != 0 || !strings.Contains(r.stdout, "prefix "+venv) {
		t.Fatalf("venv interpreter in the command: %s", r)
	}
	// 2. --python with a bare "python" command.
	r = e.job(t, dir, []string{"--python", filepath.Join(venv, "bin", "python")}, "python", "where.py")
	if r.code != 0 || !strings.Contains(r.stdout, "prefix "+venv) {
		t.Fatalf("--python: %s", r)
	}
	// 3. VIRTUAL_ENV kept by sudo -E puts the venv first on PATH.
	r = e.run(t, dir, []string{"VIRTUAL_ENV=" + venv}, "run", "--user", jobUser, "--", "python", "where.py")
	if r.code != 0 || !strings.Contains(r.stdout, "prefix "+venv) {
		t.Fatalf("VIRTUAL_ENV: %s", r)
	}
}

func testenvMissingVenv(t *testing.T, err error, out []byte) {
	t.Helper()
	t.Fatalf("python -m venv: %v: %s (apt-get install python3-venv)", err, out)
}

func TestDataIsReadOnlyAndShmIsSized(t *testing.T) {
	e := setup(t)
	data, err := os.MkdirTemp("/tmp", "st-e2e-data-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(data) })
	os.Chmod(data, 0o755)
	os.WriteFile(filepath.Join(data, "rows.csv"), []byte("a,b\n1,2\n"), 0o644)
	dir := e.project(t, nil)
	r := e.job(t, dir, []string{"--data", data + ":/data/rows", "--memory", "2GiB"}, "/bin/sh", "-c",
		"cat /data/rows/rows.csv; touch /data/rows/x 2>/dev/null && echo LEAK-writable; df -k /dev/shm | tail -1")
	if r.code != 0 || !strings.Contains(r.stdout, "1,2") || strings.Contains(r.stdout, "LEAK") {
		t.Fatalf("--data must be visible and read-only: %s", r)
	}
	// 2GiB memory shrinks the default 1GiB /dev/shm? No: 1GiB <= 2GiB stays.
	if !strings.Contains(r.stdout, "1048576") {
		t.Errorf("/dev/shm must be sized from limits.shm (1GiB = 1048576 KiB): %s", r.stdout)
	}
}

// TestImageRootfs runs a job from a root file system directory instead of
// the host's system directories.
func TestImageRootfs(t *testing.T) {
	e := setup(t)
	root, err := os.MkdirTemp("/tmp", "st-e2e-rootfs-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })
	os.Chmod(root, 0o755)
	src := filepath.Join(root, "hello.go")
	os.WriteFile(src, []byte("package main\nimport (\"fmt\"; \"os\")\nfunc main() { _, err := os.Stat(\"/usr/bin/python3\"); fmt.Println(\"hello from the image, host python visible:\", err == nil) }\n"), 0o644)
	os.MkdirAll(filepath.Join(root, "bin"), 0o755)
	b := exec.Command("go", "build", "-o", filepath.Join(root, "bin", "hello"), src)
	b.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := b.CombinedOutput(); err != nil {
		t.Fatalf("build: %v: %s", err, out)
	}
	os.Remove(src)
	prof := "version: 1\nname: image\nsandbox:\n  rootfs: " + root + "\n"
	dir := e.project(t, map[string]string{"image.yaml": prof})
	r := e.job(t, dir, []string{"--profile", "image.yaml"}, "/bin/hello")
	if r.code != 0 || !strings.Contains(r.stdout, "hello from the image, host python visible: false") {
		t.Fatalf("image rootfs: %s", r)
	}
}
