package app

import "testing"

func TestNetColumn(t *testing.T) {
	for _, tc := range []struct {
		extra map[string]string
		want  string
	}{
		{nil, "-"},
		{map[string]string{"net_addr": "10.213.0.2"}, "10.213.0.2"},
		{map[string]string{"net_addr": "10.213.0.22", "allocation": "1234"}, "10.213.0.22@1234"},
	} {
		if got := netColumn(tc.extra); got != tc.want {
			t.Errorf("netColumn(%v) = %q, want %q", tc.extra, got, tc.want)
		}
	}
}
