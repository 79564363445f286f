package daemon

import (
	"strings"
	"testing"
)

func TestConnGate(t *testing.T) {
	g := newConnGate()
	var rel []func()
	for range maxPendingPerUID {
		if err := g.enter(1000); err != nil {
			t.Fatal(err)
		}
		rel = append(rel, g.slot(1000))
	}
	if err := g.enter(1000); err == nil || !strings.Contains(err.Error(), "uid 1000 has 64 connections to the daemon waiting or being answered (at most 64)") {
		t.Fatalf("connection %d: %v", maxPendingPerUID+1, err)
	}
	if err := g.enter(1001); err != nil {
		t.Errorf("another uid: %v", err)
	}
	for range maxPendingPerUID + 1 {
		if err := g.enter(0); err != nil {
			t.Fatalf("root: %v", err)
		}
	}
	rel[0]()
	rel[0]() // once
	if err := g.enter(1000); err != nil {
		t.Errorf("after a release: %v", err)
	}
	if err := g.enter(1000); err == nil {
		t.Error("a second release freed a second place")
	}
}
