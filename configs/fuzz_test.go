package configs

import (
	"bytes"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// FuzzParseProfile checks that ParseProfile never panics, that every error
// is one *FieldError per line naming the file, and that any profile it
// accepts re-validates, has bounded limits, lets no forbidden variable
// through, and reads back the same after being written out.
//
// Seeds: testdata/fuzz/FuzzParseProfile (the shipped profiles, a full
// profile and broken ones). Run: go test -run='^$' -fuzz=FuzzParseProfile -fuzztime=60s ./configs
func FuzzParseProfile(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := ParseProfile("fuzz.yaml", data)
		if err != nil {
			if p != nil {
				t.Fatal("returned a profile and an error")
			}
			checkErrorLines(t, err)
			return
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("accepted profile does not re-validate: %v", err)
		}
		checkBounded(t, p)
		out, err := yaml.Marshal(p)
		if err != nil {
			t.Fatalf("accepted profile does not marshal: %v", err)
		}
		q, err := ParseProfile("again.yaml", out)
		if err != nil {
			t.Fatalf("accepted profile, written out, does not read back: %v\n%s", err, out)
		}
		out2, err := yaml.Marshal(q)
		if err != nil || !bytes.Equal(out, out2) {
			t.Fatalf("profile changes when read back:\n%s\n---\n%s", out, out2)
		}
	})
}

func checkErrorLines(t *testing.T, err error) {
	t.Helper()
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	for _, e := range errs {
		var fe *FieldError
		if !errors.As(e, &fe) {
			t.Fatalf("error %T %q is not a *FieldError", e, e)
		}
		msg := e.Error()
		if !strings.HasPrefix(msg, "fuzz.yaml") || strings.ContainsAny(msg, "\r\n") || fe.Msg == "" {
			t.Fatalf("error is not one line naming the file: %q", msg)
		}
	}
}

func checkBounded(t *testing.T, p *Profile) {
	t.Helper()
	l := p.Limits
	bad := func(what string, v any) { t.Fatalf("accepted profile has %s = %v", what, v) }
	if !(l.CPUs >= 0.01 && l.CPUs <= MaxCPUs) {
		bad("limits.cpus", l.CPUs)
	}
	if l.Memory < MinMemory || l.Memory > MaxMemory {
		bad("limits.memory", l.Memory)
	}
	if l.Pids < MinPids || l.Pids > MaxPids {
		bad("limits.pids", l.Pids)
	}
	if l.WallTime.D() < time.Second || l.WallTime.D() > MaxWallTime {
		bad("limits.wall_time", l.WallTime)
	}
	if l.Scratch < MinScratch || l.Scratch > MaxMemory {
		bad("limits.scratch", l.Scratch)
	}
	if l.Home < MinScratch || l.Home > MaxMemory {
		bad("limits.home", l.Home)
	}
	if l.Shm < MinScratch || l.Shm > l.Memory {
		bad("limits.shm", l.Shm)
	}
	if l.StopGrace.D() <= 0 || l.StopGrace.D() > 10*time.Minute {
		bad("limits.stop_grace", l.StopGrace)
	}
	if l.GPUs.Count < 0 || l.GPUs.Count > MaxGPUs {
		bad("limits.gpus", l.GPUs)
	}
	for _, i := range l.GPUs.Indices {
		if i < 0 || i >= MaxGPUs {
			bad("limits.gpus", l.GPUs)
		}
	}
	for _, x := range []float64{l.CPUSeconds, l.GPUSeconds} {
		if !(x >= 0) || math.IsInf(x, 0) {
			bad("a CPU/GPU budget", x)
		}
	}
	if len(p.Secrets) > 0 && (p.Vault.TTL.D() < time.Second || p.Vault.TTL > l.WallTime || p.Vault.TokenRole == "") {
		bad("vault", p.Vault)
	}
	if !relInside(p.Sandbox.Output) {
		bad("sandbox.output", p.Sandbox.Output)
	}
	var names []string
	names = append(names, p.Env.Pass...)
	names = append(names, sortedKeys(p.Env.Set)...)
	for _, s := range p.Secrets {
		names = append(names, sortedKeys(s.Env)...)
		for _, dst := range s.Files {
			if !strings.HasPrefix(dst, "/run/secrets/") {
				bad("a secret file", dst)
			}
		}
	}
	for _, n := range names {
		if IsForbiddenEnv(n) || !envName.MatchString(n) {
			bad("an environment variable", n)
		}
	}
	if p.Network.Mode != "none" && p.Network.Mode != "sandbox" {
		bad("network.mode", p.Network.Mode)
	}
	if p.Network.Mode == "none" && (len(p.Network.Allow) > 0 || len(p.Network.Peers) > 0) {
		bad("network.allow with mode none", p.Network.Allow)
	}
}
