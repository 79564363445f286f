package launcher

import "testing"

func TestJobRowNet(t *testing.T) {
	for _, tc := range []struct {
		row  JobRow
		want string
	}{
		{JobRow{}, "-"},
		{JobRow{NetAddr: "10.213.0.2"}, "10.213.0.2"},
		{JobRow{NetAddr: "10.213.0.22", Allocation: "1234"}, "10.213.0.22@1234"},
	} {
		if got := tc.row.Net(); got != tc.want {
			t.Errorf("%+v.Net() = %q, want %q", tc.row, got, tc.want)
		}
	}
}
