package configs

import (
	"fmt"
	"math/bits"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// ByteSize is a size in bytes, written in YAML as an integer or with a unit:
// 512MiB, 8GiB, 1G, 100M (K/M/G/T are powers of 1000, KiB/MiB/GiB/TiB of 1024).
type ByteSize uint64

var byteUnits = []struct {
	suffix string
	mult   uint64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"Ti", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
	{"K", 1e3}, {"M", 1e6}, {"G", 1e9}, {"T", 1e12}, {"B", 1},
}

var sizeNumber = regexp.MustCompile(`^([0-9]+)(?:\.([0-9]+))?$`)

// ParseByteSize parses "8GiB", "512M", "1.5GiB", "1024". Only decimal digits
// with an optional fraction are read (no signs, exponents, NaN or Inf), and a
// size that does not fit in 64 bits is an error, never a wrapped value.
func ParseByteSize(s string) (ByteSize, error) {
	t := strings.TrimSpace(s)
	mult := uint64(1)
	for _, u := range byteUnits {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	m := sizeNumber.FindStringSubmatch(t)
	if m == nil {
		return 0, fmt.Errorf("want a size such as 512MiB or 8GiB, got %q", s)
	}
	tooLarge := fmt.Errorf("want a size below 16EiB, got %q", s)
	whole, err := strconv.ParseUint(m[1], 10, 64)
	if err != nil {
		return 0, tooLarge
	}
	hi, n := bits.Mul64(whole, mult)
	if hi != 0 {
		return 0, tooLarge
	}
	if m[2] != "" && mult > 1 {
		f, err := strconv.ParseFloat("0."+m[2], 64)
		if err != nil {
			return 0, fmt.Errorf("want a size such as 512MiB or 8GiB, got %q", s)
		}
		var carry uint64
		n, carry = bits.Add64(n, uint64(f*float64(mult)), 0) // f*mult <= mult: a carry only at the top
		if carry != 0 {
			return 0, tooLarge
		}
	}
	return ByteSize(n), nil
}

// UnmarshalYAML implements yaml.Unmarshaler.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("want a size such as 512MiB or 8GiB, got %s", kindName(n))
	}
	v, err := ParseByteSize(n.Value)
	if err != nil {
		return err
	}
	*b = v
	return nil
}

// MarshalYAML implements yaml.Marshaler.
func (b ByteSize) MarshalYAML() (any, error) { return b.String(), nil }

// String formats the size with the largest binary unit that divides it.
func (b ByteSize) String() string {
	for _, u := range []struct {
		s string
		m uint64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if uint64(b) >= u.m && uint64(b)%u.m == 0 {
			return fmt.Sprintf("%d%s", uint64(b)/u.m, u.s)
		}
	}
	return strconv.FormatUint(uint64(b), 10)
}

// Duration is a time.Duration written in YAML as "30s", "2h", "1h30m".
type Duration time.Duration

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("want a duration such as 30s or 2h, got %s", kindName(n))
	}
	v, err := time.ParseDuration(strings.TrimSpace(n.Value))
	if err != nil || v < 0 {
		return fmt.Errorf("want a duration such as 30s or 2h, got %q", n.Value)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML implements yaml.Marshaler.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

func (d Duration) String() string { return time.Duration(d).String() }
