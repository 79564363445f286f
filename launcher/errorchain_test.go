package launcher

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/securetrain/securetrain/configs"
	"github.com/securetrain/securetrain/pin"
)

// TestInputRefusalsKeepTheirChain: a refused input's error is one line, and
// pin's typed error is still under it for errors.Is/As.
func TestInputRefusalsKeepTheirChain(t *testing.T) {
	f := newInputsFixture(t)
	f.file(t, "train/a.txt", "alpha\n", 0o644)
	data := filepath.Join(f.root, "train")
	inputs := []configs.Input{{Name: "train", Path: data, Manifest: f.manifest(t, data)}}
	ctx := context.Background()
	pl := f.pl(inputs...)
	if err := f.l.prepareInputs(ctx, pl); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(data, "a.txt"), []byte("poison\n"), 0o644)

	err := f.l.newJob("", pl).recheckInputs(ctx)
	var ce *pin.ChangedError
	if !errors.As(err, &ce) || len(ce.Changes) != 1 || ce.Changes[0].Path != filepath.Join(data, "a.txt") {
		t.Errorf("recheck: want a *pin.ChangedError naming a.txt, got %#v", err)
	}
	err = f.l.prepareInputs(ctx, f.pl(inputs...))
	var me *pin.MismatchError
	if !errors.As(err, &me) || !errors.Is(err, pin.ErrMismatch) || strings.Contains(err.Error(), "\n") {
		t.Errorf("verification: want one line over a *pin.MismatchError, got %#v", err)
	}
}
