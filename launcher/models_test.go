package launcher

import (
	"strings"
	"testing"

	"github.com/securetrain/securetrain/configs"
)

// TestWithModel: --model flags become one more signed model input, checked
// as a profile's; each wrong combination names the flags.
func TestWithModel(t *testing.T) {
	p, err := configs.ParseProfile("p.yaml", []byte("version: 1\nname: t\n"))
	if err != nil {
		t.Fatal(err)
	}
	q, err := WithModel(p, &ModelFlag{Path: "models/m:/models/base", Signature: "m.sig", Key: "/k.pub"}, "/home/u/proj")
	if err != nil {
		t.Fatal(err)
	}
	in := q.Inputs[0]
	if len(p.Inputs) != 0 || in.Path != "/home/u/proj/models/m" || in.Target != "/models/base" || in.Kind != "model" ||
		in.Signature.Bundle != "/home/u/proj/m.sig" || in.Signature.Key != "/k.pub" {
		t.Fatalf("input = %+v %+v", in, in.Signature)
	}
	if q, err := WithModel(p, &ModelFlag{}, "/"); err != nil || q != p {
		t.Fatalf("no flags: %v", err)
	}
	for _, tc := range []struct {
		m    ModelFlag
		want string
	}{
		{ModelFlag{Signature: "s"}, "go with --model"},
		{ModelFlag{Path: "/m", Key: "k"}, "--model-signature"},
		{ModelFlag{Path: "/m", Signature: "s"}, "exactly one trust"},
		{ModelFlag{Path: "/m", Signature: "s", Key: "k", CA: "c"}, "exactly one trust"},
		{ModelFlag{Path: "/m", Signature: "s", CA: "c"}, "signature.identity"},
		{ModelFlag{Path: "/m:rel", Signature: "s", Key: "k"}, "target"},
	} {
		if _, err := WithModel(p, &tc.m, "/d"); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: err = %v, want %q", tc.m, err, tc.want)
		}
	}
}
