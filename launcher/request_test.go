package launcher

import (
	"errors"
	"os/user"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/securetrain/securetrain/configs"
)

func TestParseData(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    DataMount
		wantErr string
	}{
		{"/datasets/cifar", DataMount{"/datasets/cifar", "/data/cifar"}, ""},
		{"/datasets/cifar/", DataMount{"/datasets/cifar/", "/data/cifar"}, ""},
		{"/datasets/cifar:/mnt/c", DataMount{"/datasets/cifar", "/mnt/c"}, ""},
		{"rel/imagenet", DataMount{"rel/imagenet", "/data/imagenet"}, ""},
		{"", DataMount{}, `--data "": want SRC[:DST], e.g. /datasets/cifar or /datasets/cifar:/data/cifar`},
		{":/data/x", DataMount{}, `--data ":/data/x": want SRC[:DST], e.g. /datasets/cifar or /datasets/cifar:/data/cifar`},
		{"/d:rel", DataMount{}, `--data "/d:rel": the target "rel" must be a clean absolute path other than /`},
		{"/d:/", DataMount{}, `--data "/d:/": the target "/" must be a clean absolute path other than /`},
		{"/d:/data/../etc", DataMount{}, `--data "/d:/data/../etc": the target "/data/../etc" must be a clean absolute path other than /`},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseData(tc.in)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("err %v\nwant %s", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("got %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func defaultProfile(t *testing.T) *configs.Profile {
	t.Helper()
	p, err := configs.LoadProfile("default", "")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestApplyOverrides(t *testing.T) {
	for _, tc := range []struct {
		name  string
		o     Overrides
		check func(t *testing.T, p *configs.Profile)
	}{
		{"nothing", Overrides{}, func(t *testing.T, p *configs.Profile) {
			if !reflect.DeepEqual(p, defaultProfile(t)) {
				t.Error("no overrides changed the profile")
			}
		}},
		{"cpus", Overrides{CPUs: 0.5}, func(t *testing.T, p *configs.Profile) {
			if p.Limits.CPUs != 0.5 {
				t.Errorf("cpus %g", p.Limits.CPUs)
			}
		}},
		{"memory lowers shm", Overrides{Memory: "512MiB"}, func(t *testing.T, p *configs.Profile) {
			if p.Limits.Memory != 512<<20 || p.Limits.Shm != 256<<20 {
				t.Errorf("memory %d shm %d", p.Limits.Memory, p.Limits.Shm)
			}
		}},
		{"memory keeps a fitting shm", Overrides{Memory: "16GiB"}, func(t *testing.T, p *configs.Profile) {
			if p.Limits.Memory != 16<<30 || p.Limits.Shm != 1<<30 {
				t.Errorf("memory %d shm %d", p.Limits.Memory, p.Limits.Shm)
			}
		}},
		{"pids", Overrides{Pids: 64}, func(t *testing.T, p *configs.Profile) {
			if p.Limits.Pids != 64 {
				t.Errorf("pids %d", p.Limits.Pids)
			}
		}},
		{"wall time", Overrides{WallTime: 90 * time.Second}, func(t *testing.T, p *configs.Profile) {
			if p.Limits.WallTime.D() != 90*time.Second {
				t.Errorf("wall time %s", p.Limits.WallTime)
			}
		}},
		{"gpus list", Overrides{GPUs: "0,2"}, func(t *testing.T, p *configs.Profile) {
			if !reflect.DeepEqual(p.Limits.GPUs, configs.GPUSet{Indices: []int{0, 2}}) {
				t.Errorf("gpus %v", p.Limits.GPUs)
			}
		}},
		{"gpus all", Overrides{GPUs: "all"}, func(t *testing.T, p *configs.Profile) {
			if !p.Limits.GPUs.All {
				t.Errorf("gpus %v", p.Limits.GPUs)
			}
		}},
		{"gpus none", Overrides{GPUs: "none"}, func(t *testing.T, p *configs.Profile) {
			if !p.Limits.GPUs.None() {
				t.Errorf("gpus %v", p.Limits.GPUs)
			}
		}},
		{"network none", Overrides{Network: "none"}, func(t *testing.T, p *configs.Profile) {
			if p.Network.Mode != "none" || p.Network.Allow != nil || p.Network.Peers != nil {
				t.Errorf("network %+v", p.Network)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			orig := defaultProfile(t)
			p, err := ApplyOverrides(orig, tc.o)
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, p)
			if !reflect.DeepEqual(orig, defaultProfile(t)) {
				t.Error("ApplyOverrides changed the profile it was given")
			}
		})
	}
}

func TestApplyOverridesNetworkNoneOnSandboxProfile(t *testing.T) {
	p := defaultProfile(t)
	p.Network.Mode, p.Network.Allow, p.Network.Peers = "sandbox", []string{"pypi.org:443"}, []string{"10.213.0.2"}
	q, err := ApplyOverrides(p, Overrides{Network: "none"})
	if err != nil {
		t.Fatal(err)
	}
	if q.Network.Mode != "none" || q.Network.Allow != nil || q.Network.Peers != nil {
		t.Errorf("network %+v", q.Network)
	}
	if p.Network.Mode != "sandbox" || len(p.Network.Allow) != 1 {
		t.Errorf("original changed: %+v", p.Network)
	}
}

func TestApplyOverridesErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    Overrides
		want string
	}{
		{"cpus too many", Overrides{CPUs: 5000}, "with command-line overrides: --cpus: limits.cpus: must be between 0.01 and 1024, got 5000"},
		{"cpus negative", Overrides{CPUs: -1}, "with command-line overrides: --cpus: limits.cpus: must be between 0.01 and 1024, got -1"},
		{"memory unparsable", Overrides{Memory: "lots"}, `--memory: want a size such as 512MiB or 8GiB, got "lots"`},
		{"memory too small", Overrides{Memory: "1MiB"}, "with command-line overrides: --memory: limits.memory: must be between 16MiB and 16TiB, got 1MiB; --memory: limits.shm: must be between 1MiB and limits.memory (1MiB), got 512KiB"},
		{"pids", Overrides{Pids: 3}, "with command-line overrides: --pids: limits.pids: must be between 16 and 4194304, got 3"},
		{"wall time negative", Overrides{WallTime: -time.Second}, "with command-line overrides: --wall-time: limits.wall_time: must be between 1s and 720h, got -1s"},
		{"wall time too long", Overrides{WallTime: 1000 * time.Hour}, "with command-line overrides: --wall-time: limits.wall_time: must be between 1s and 720h, got 1000h0m0s"},
		{"gpus", Overrides{GPUs: "two"}, `--gpus: want all, none, a count or a list of GPU indices such as 0,1; got "two"`},
		{"gpus twice", Overrides{GPUs: "1,1"}, `--gpus: GPU 1 listed twice in "1,1"`},
		{"network", Overrides{Network: "host"}, `--network: want none, got "host"`},
		{"two bad flags, one line", Overrides{CPUs: 5000, Pids: 3}, "with command-line overrides: --cpus: limits.cpus: must be between 0.01 and 1024, got 5000; --pids: limits.pids: must be between 16 and 4194304, got 3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ApplyOverrides(defaultProfile(t), tc.o)
			if err == nil {
				t.Fatal("accepted")
			}
			if err.Error() != tc.want {
				t.Errorf("error\n got %s\nwant %s", err, tc.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
		})
	}
	_, err := ApplyOverrides(defaultProfile(t), Overrides{CPUs: 5000})
	var fe *configs.FieldError
	if !errors.As(err, &fe) || fe.Field != "limits.cpus" {
		t.Errorf("FieldError not reachable through %v", err)
	}
}

func TestCallerSpec(t *testing.T) {
	for _, tc := range []struct {
		name           string
		euid, uid, gid int
		env            map[string]string
		user           string
		wantSpec       string
		wantGID        int
		wantErr        error
	}{
		{"not root is itself", 1000, 1000, 1000, map[string]string{"SUDO_UID": "2000"}, "", "1000", 1000, nil},
		{"not root ignores --user", 1000, 1000, 100, nil, "bob", "1000", 100, nil},
		{"sudo", 0, 0, 0, map[string]string{"SUDO_UID": "1000", "SUDO_GID": "1001"}, "", "1000", 1001, nil},
		{"sudo without gid", 0, 0, 0, map[string]string{"SUDO_UID": "1000"}, "", "1000", -1, nil},
		{"sudo with bad gid", 0, 0, 0, map[string]string{"SUDO_UID": "1000", "SUDO_GID": "-5"}, "", "1000", -1, nil},
		{"--user wins over sudo", 0, 0, 0, map[string]string{"SUDO_UID": "1000"}, "bob", "bob", -1, nil},
		{"slurm", 0, 0, 0, map[string]string{"SLURM_JOB_UID": "3000", "SLURM_JOB_GID": "3001"}, "", "3000", 3001, nil},
		{"sudo from root falls to slurm", 0, 0, 0, map[string]string{"SUDO_UID": "0", "SLURM_JOB_UID": "3000"}, "", "3000", -1, nil},
		{"sudo from root alone", 0, 0, 0, map[string]string{"SUDO_UID": "0", "SUDO_GID": "0"}, "", "", -1, ErrRootCaller},
		{"root shell", 0, 0, 0, map[string]string{}, "", "", -1, ErrRootCaller},
		{"setuid root", 0, 1000, 1000, nil, "", "", -1, ErrRootCaller},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec, gid, err := callerSpec(tc.euid, tc.uid, tc.gid, tc.env, tc.user)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err %v, want %v", err, tc.wantErr)
			}
			if spec != tc.wantSpec || gid != tc.wantGID {
				t.Errorf("got %q gid %d, want %q gid %d", spec, gid, tc.wantSpec, tc.wantGID)
			}
		})
	}
}

func TestLookupCaller(t *testing.T) {
	c, err := lookupCaller("424242", -1)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Caller{UID: 424242, GID: 424242, Name: "user424242", Home: "/home/user424242"}); !reflect.DeepEqual(c, want) {
		t.Errorf("uid without passwd entry: %+v, want %+v", c, want)
	}
	if c, _ := lookupCaller("424242", 5); c.GID != 5 {
		t.Errorf("given gid not used: %+v", c)
	}
	for spec, want := range map[string]string{
		"0":              `user "0" is root: jobs never run as root; pass --user with an unprivileged user`,
		"root":           `user "root" is root: jobs never run as root; pass --user with an unprivileged user`,
		"-1":             `--user "-1": want a user name or a uid of 1 or more`,
		"no-such-user-x": `--user "no-such-user-x": no such user`,
	} {
		if _, err := lookupCaller(spec, -1); err == nil || err.Error() != want {
			t.Errorf("lookupCaller(%q) = %v, want %s", spec, err, want)
		}
	}
	if _, err := user.Lookup("nobody"); err != nil {
		t.Skip("no nobody user here")
	}
	c, err = lookupCaller("nobody", -1)
	if err != nil {
		t.Fatal(err)
	}
	// nobody's passwd home is /nonexistent: the job gets a real one.
	if c.UID != 65534 || c.Name != "nobody" || c.Home != "/home/nobody" {
		t.Errorf("nobody: %+v", c)
	}
}
