package configs

import (
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func TestParseByteSize(t *testing.T) {
	tests := []struct {
		in      string
		want    ByteSize
		wantErr string
	}{
		{in: "0", want: 0},
		{in: "1024", want: 1024},
		{in: "1B", want: 1},
		{in: "1K", want: 1000},
		{in: "1KB", want: 1000},
		{in: "1Ki", want: 1 << 10},
		{in: "1KiB", want: 1 << 10},
		{in: "512MiB", want: 512 << 20},
		{in: "100M", want: 100e6},
		{in: "8GiB", want: 8 << 30},
		{in: "1G", want: 1e9},
		{in: "2TiB", want: 2 << 40},
		{in: "3T", want: 3e12},
		{in: " 8 GiB ", want: 8 << 30},
		{in: "1.5GiB", want: 3 << 29},
		{in: "0.5KiB", want: 512},
		{in: "18446744073709551615", want: 1<<64 - 1},
		{in: "16777215TiB", want: 16777215 << 40},
		{in: "18446744073709551616", wantErr: `want a size below 16EiB, got "18446744073709551616"`},
		{in: "16777216TiB", wantErr: `want a size below 16EiB, got "16777216TiB"`},
		{in: "99999999TiB", wantErr: `want a size below 16EiB, got "99999999TiB"`},
		{in: "16777215.9999999TiB", want: 18446744073709441664},
		{in: "16777215.99999999999999TiB", want: 1<<64 - 1},
		{in: "16777215.99999999999999999999TiB", wantErr: `want a size below 16EiB, got "16777215.99999999999999999999TiB"`},
		{in: "", wantErr: `want a size such as 512MiB or 8GiB, got ""`},
		{in: "B", wantErr: `want a size such as 512MiB or 8GiB, got "B"`},
		{in: "GiB", wantErr: `want a size such as 512MiB or 8GiB, got "GiB"`},
		{in: "-1", wantErr: `want a size such as 512MiB or 8GiB, got "-1"`},
		{in: "-0", wantErr: `want a size such as 512MiB or 8GiB, got "-0"`},
		{in: "+1", wantErr: `want a size such as 512MiB or 8GiB, got "+1"`},
		{in: "1e3", wantErr: `want a size such as 512MiB or 8GiB, got "1e3"`},
		{in: "0x10", wantErr: `want a size such as 512MiB or 8GiB, got "0x10"`},
		{in: "1_000", wantErr: `want a size such as 512MiB or 8GiB, got "1_000"`},
		{in: "NaN", wantErr: `want a size such as 512MiB or 8GiB, got "NaN"`},
		{in: "Inf", wantErr: `want a size such as 512MiB or 8GiB, got "Inf"`},
		{in: "8gib", wantErr: `want a size such as 512MiB or 8GiB, got "8gib"`},
		{in: "8 gigs", wantErr: `want a size such as 512MiB or 8GiB, got "8 gigs"`},
		{in: "1.", wantErr: `want a size such as 512MiB or 8GiB, got "1."`},
		{in: ".5G", wantErr: `want a size such as 512MiB or 8GiB, got ".5G"`},
	}
	for _, tt := range tests {
		got, err := ParseByteSize(tt.in)
		if tt.wantErr != "" {
			if err == nil || err.Error() != tt.wantErr {
				t.Errorf("ParseByteSize(%q) = %d, %v; want error %q", tt.in, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
}

func TestByteSizeString(t *testing.T) {
	for _, tt := range []struct {
		in   ByteSize
		want string
	}{
		{0, "0"}, {1000, "1000"}, {1024, "1KiB"}, {1536, "1536"}, {3 << 29, "1536MiB"},
		{8 << 30, "8GiB"}, {16 << 40, "16TiB"}, {1<<64 - 1, "18446744073709551615"},
	} {
		if got := tt.in.String(); got != tt.want {
			t.Errorf("ByteSize(%d).String() = %q, want %q", uint64(tt.in), got, tt.want)
		}
		back, err := ParseByteSize(tt.in.String())
		if err != nil || back != tt.in {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d back", tt.in.String(), back, err, uint64(tt.in))
		}
	}
}

func TestDurationYAML(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Duration
		wantErr string
	}{
		{in: "30s", want: 30 * time.Second},
		{in: "2h", want: 2 * time.Hour},
		{in: "1h30m", want: 90 * time.Minute},
		{in: "0", want: 0},
		{in: `" 5m "`, want: 5 * time.Minute},
		{in: "10", wantErr: `want a duration such as 30s or 2h, got "10"`},
		{in: "-1s", wantErr: `want a duration such as 30s or 2h, got "-1s"`},
		{in: "forever", wantErr: `want a duration such as 30s or 2h, got "forever"`},
		{in: "9999999999h", wantErr: `want a duration such as 30s or 2h, got "9999999999h"`},
		{in: "[1s]", wantErr: "want a duration such as 30s or 2h, got a list"},
	}
	for _, tt := range tests {
		var d Duration
		err := yaml.Unmarshal([]byte(tt.in), &d)
		if tt.wantErr != "" {
			if err == nil || err.Error() != tt.wantErr {
				t.Errorf("Duration from %s = %v, %v; want error %q", tt.in, d, err, tt.wantErr)
			}
			continue
		}
		if err != nil || d.D() != tt.want {
			t.Errorf("Duration from %s = %v, %v; want %v", tt.in, d, err, tt.want)
		}
		out, err := yaml.Marshal(d)
		var back Duration
		if err != nil || yaml.Unmarshal(out, &back) != nil || back != d {
			t.Errorf("Duration %v does not round-trip through %q", d, out)
		}
	}
}

func TestParseGPUSet(t *testing.T) {
	tests := []struct {
		in      string
		want    string // GPUSet.String()
		wantErr string
	}{
		{in: "all", want: "all"},
		{in: "none", want: "none"},
		{in: "", want: "none"},
		{in: "0", want: "none"},
		{in: "2", want: "2"},
		{in: " 4 ", want: "4"},
		{in: "0,2", want: "0,2"},
		{in: "3, 1", want: "3,1"},
		{in: "0,0", wantErr: `GPU 0 listed twice in "0,0"`},
		{in: "1,2,1", wantErr: `GPU 1 listed twice in "1,2,1"`},
		{in: "-1", wantErr: `want all, none, a count or a list of GPU indices such as 0,1; got "-1"`},
		{in: "0,-2", wantErr: `want all, none, a count or a list of GPU indices such as 0,1; got "0,-2"`},
		{in: "1,", wantErr: `want all, none, a count or a list of GPU indices such as 0,1; got "1,"`},
		{in: "1.5", wantErr: `want all, none, a count or a list of GPU indices such as 0,1; got "1.5"`},
		{in: "ALL", wantErr: `want all, none, a count or a list of GPU indices such as 0,1; got "ALL"`},
		{in: "some", wantErr: `want all, none, a count or a list of GPU indices such as 0,1; got "some"`},
	}
	for _, tt := range tests {
		g, err := ParseGPUSet(tt.in)
		if tt.wantErr != "" {
			if err == nil || err.Error() != tt.wantErr {
				t.Errorf("ParseGPUSet(%q) = %v, %v; want error %q", tt.in, g, err, tt.wantErr)
			}
			continue
		}
		if err != nil || g.String() != tt.want {
			t.Errorf("ParseGPUSet(%q) = %v, %v; want %s", tt.in, g, err, tt.want)
		}
		if g.None() != (tt.want == "none") {
			t.Errorf("ParseGPUSet(%q).None() = %v", tt.in, g.None())
		}
	}
}

func TestGPUSetYAML(t *testing.T) {
	tests := []struct {
		in      string
		want    GPUSet
		wantErr string
	}{
		{in: "all", want: GPUSet{All: true}},
		{in: "none", want: GPUSet{}},
		{in: "~", want: GPUSet{}},
		{in: "[]", want: GPUSet{}},
		{in: "0", want: GPUSet{}},
		{in: "3", want: GPUSet{Count: 3}},
		{in: `"0,2"`, want: GPUSet{Indices: []int{0, 2}}},
		{in: "[0, 2]", want: GPUSet{Indices: []int{0, 2}}},
		{in: "[0]", want: GPUSet{Indices: []int{0}}},
		{in: "[0, 0]", wantErr: `GPU 0 listed twice in "[0, 0]"`},
		{in: "[-1]", wantErr: `want all, none, a count or a list of GPU indices such as 0,1; got "[-1]"`},
		{in: "[a]", wantErr: `want all, none, a count or a list of GPU indices such as 0,1; got "[a]"`},
		{in: "{a: 1}", wantErr: "want all, none, a count or a list of GPU indices, got a mapping"},
	}
	for _, tt := range tests {
		var g GPUSet
		err := yaml.Unmarshal([]byte(tt.in), &g)
		if tt.wantErr != "" {
			if err == nil || err.Error() != tt.wantErr {
				t.Errorf("GPUSet from %s = %v, %v; want error %q", tt.in, g, err, tt.wantErr)
			}
			continue
		}
		if err != nil || g.String() != tt.want.String() || g.All != tt.want.All || g.Count != tt.want.Count || len(g.Indices) != len(tt.want.Indices) {
			t.Errorf("GPUSet from %s = %#v, %v; want %#v", tt.in, g, err, tt.want)
			continue
		}
		// Whatever was read is written back so that it reads the same.
		out, err := yaml.Marshal(g)
		var back GPUSet
		if err != nil || yaml.Unmarshal(out, &back) != nil || back.String() != g.String() || back.None() != g.None() || len(back.Indices) != len(g.Indices) {
			t.Errorf("GPUSet %#v does not round-trip through %q: %#v", g, out, back)
		}
	}
}
