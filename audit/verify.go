package audit

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
)

// ProblemKind classifies what Verify found wrong.
type ProblemKind string

// Problem kinds.
const (
	Malformed     ProblemKind = "malformed"      // not an audit line
	Edited        ProblemKind = "edited"         // content does not match the line's own hash
	Replaced      ProblemKind = "replaced"       // the line was rewritten with a fresh hash: the next line does not chain to it
	Inserted      ProblemKind = "inserted"       // the line is not part of the chain: the next line chains past it
	Deleted       ProblemKind = "deleted"        // lines are missing before this one
	Reordered     ProblemKind = "reordered"      // this line and the next are swapped
	OutOfOrder    ProblemKind = "out_of_order"   // seq goes backwards
	BadStart      ProblemKind = "bad_start"      // the log does not start at seq 1
	Torn          ProblemKind = "torn"           // the last line has no newline (a write was cut off)
	Truncated     ProblemKind = "truncated"      // a checkpoint covers more than the log holds
	Rewritten     ProblemKind = "rewritten"      // the chain head differs from a signed checkpoint
	BadCheckpoint ProblemKind = "bad_checkpoint" // a checkpoint's signature does not verify
	NoCheckpoint  ProblemKind = "no_checkpoint"  // checkpoints were asked for but none is for this log
)

// Problem is one finding, naming the 1-based line it is about (0 when it is
// about a checkpoint, not a line).
type Problem struct {
	Line int
	Seq  uint64
	Kind ProblemKind
	Msg  string
}

func (p Problem) String() string {
	if p.Line == 0 {
		return fmt.Sprintf("%s: %s", p.Kind, p.Msg)
	}
	return fmt.Sprintf("line %d: %s: %s", p.Line, p.Kind, p.Msg)
}

// ErrTampered is matched by every *VerifyError.
var ErrTampered = errors.New("audit log does not verify")

// VerifyError lists what is wrong with a log, in line order, at most
// MaxProblems of them.
type VerifyError struct {
	Problems []Problem
	More     int // problems found beyond MaxProblems
}

// MaxProblems bounds the problems a VerifyError lists.
const MaxProblems = 50

func (e *VerifyError) Error() string {
	s := "audit log does not verify: " + e.Problems[0].String()
	if n := len(e.Problems) - 1 + e.More; n > 0 {
		s += fmt.Sprintf(" (and %d more)", n)
	}
	return s
}

// Unwrap makes errors.Is(err, ErrTampered) true.
func (e *VerifyError) Unwrap() error { return ErrTampered }

// Summary describes a verified (or partly verified) log.
type Summary struct {
	Lines       int
	FirstSeq    uint64
	LastSeq     uint64
	Head        string // hash of the last line
	Recovered   int    // partial lines closed by a recovered event
	Checkpoints int    // checkpoints whose signature verified and that were compared
	// LastCheckpointSeq is the highest seq a verified checkpoint covers; lines
	// after it are protected against truncation and rewriting only by later
	// checkpoints.
	LastCheckpointSeq uint64
}

// VerifyOptions adds checkpoints to verification.
type VerifyOptions struct {
	// Checkpoints to compare the chain against; each must verify with Verifier.
	Checkpoints []Checkpoint
	Verifier    SigVerifier
	// LogID selects the checkpoints of this log (Checkpoint.Log); empty takes
	// them all.
	LogID string
	// RequireCheckpoint makes "no checkpoint for this log" a problem.
	RequireCheckpoint bool
}

// Verify checks the chain of a log read from r: every line's own hash, seq
// order and the link to the line before. It returns a *VerifyError naming the
// lines that are wrong. Without checkpoints it cannot see a truncated tail or
// a chain recomputed from the first edit on; use VerifyLog for that.
func Verify(r io.Reader) error {
	_, err := VerifyLog(context.Background(), r, VerifyOptions{})
	return err
}

type lineInfo struct {
	ok   bool // decoded with seq and hash (its own hash may still be wrong)
	no   int
	off  int64
	raw  []byte // only kept for a possibly torn line
	seq  uint64
	hash string
	prev string
	bad  bool // its own check failed
	err  error
}

type verifier struct {
	problems []Problem
	more     int
	last     lineInfo // the line before the current one
	last2    lineInfo // the one before that
	pending  *Problem // a Deleted finding that a swap may turn into Reordered
	badLine  *lineInfo
	cps      map[uint64][]Checkpoint
	sum      Summary
}

func (v *verifier) add(p Problem) {
	if len(v.problems) >= MaxProblems {
		v.more++
		return
	}
	v.problems = append(v.problems, p)
}

func (v *verifier) flushPending() {
	if v.pending != nil {
		v.add(*v.pending)
		v.pending = nil
	}
}

// VerifyLog is Verify with checkpoints: a checkpoint whose seq the log does
// not reach means truncation; a line whose hash differs from a checkpoint's
// head means the chain was rewritten at or before it.
func VerifyLog(ctx context.Context, r io.Reader, opts VerifyOptions) (Summary, error) {
	v := &verifier{cps: map[uint64][]Checkpoint{}}
	if len(opts.Checkpoints) > 0 || opts.RequireCheckpoint {
		if opts.Verifier == nil {
			return Summary{}, errors.New("audit verify: checkpoints given without a key to verify them")
		}
		for _, c := range opts.Checkpoints {
			if opts.LogID != "" && c.Log != opts.LogID {
				continue
			}
			if err := opts.Verifier.Verify(ctx, c.Message(), c.Sig); err != nil {
				v.add(Problem{Kind: BadCheckpoint, Seq: c.Seq, Msg: fmt.Sprintf("checkpoint of %s seq %d at %s: signature does not verify: %v", c.Log, c.Seq, c.Time.Format("2006-01-02T15:04:05Z07:00"), err)})
				continue
			}
			v.cps[c.Seq] = append(v.cps[c.Seq], c)
		}
		if len(v.cps) == 0 && opts.RequireCheckpoint {
			v.add(Problem{Kind: NoCheckpoint, Msg: fmt.Sprintf("no checkpoint with a valid signature for log %q", opts.LogID)})
		}
	}
	br := bufio.NewReaderSize(r, 256<<10)
	var off int64
	no := 0
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			no++
			torn := line[len(line)-1] != '\n'
			content := bytes.TrimSuffix(line, []byte("\n"))
			v.line(no, off, content, torn)
			off += int64(len(line))
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return v.sum, fmt.Errorf("audit verify: read line %d: %w", no+1, err)
		}
	}
	v.finish()
	if len(v.problems) > 0 {
		sort.SliceStable(v.problems, func(i, j int) bool { return v.problems[i].Line < v.problems[j].Line })
		return v.sum, &VerifyError{Problems: v.problems, More: v.more}
	}
	return v.sum, nil
}

func (v *verifier) line(no int, off int64, content []byte, torn bool) {
	v.sum.Lines = no
	ev, err := parseLine(content)
	cur := lineInfo{no: no, off: off, err: err}
	if err == nil || errors.Is(err, errHash) {
		cur.ok, cur.seq, cur.hash, cur.prev = true, ev.Seq, ev.Hash, ev.Prev
	}
	cur.bad = err != nil

	// A damaged line just before: is this the writer's recovered event for it?
	if b := v.badLine; b != nil {
		v.badLine = nil
		if !cur.bad && ev.Type == TypeRecovered && recoveredMatches(ev, b) {
			v.sum.Recovered++
			// The fragment is not part of the chain: check this line against
			// the line before the fragment.
			v.last = v.last2
			v.check(cur, ev)
			return
		}
		v.report(*b)
	}
	if torn {
		v.flushPending()
		v.add(Problem{Line: no, Seq: cur.seq, Kind: Torn, Msg: "the last line has no newline: a write was cut off (the next append records it) or the log was truncated mid-line"})
		return
	}
	if cur.bad {
		// Decide after the next line, which may be a recovered event.
		cur.raw = append([]byte(nil), content...)
		v.badLine = &cur
		v.last2, v.last = v.last, cur
		return
	}
	v.check(cur, ev)
}

// report turns a damaged line into a problem and checks its link if it has one.
func (v *verifier) report(b lineInfo) {
	v.flushPending()
	kind := Malformed
	if errors.Is(b.err, errHash) {
		kind = Edited
	}
	v.add(Problem{Line: b.no, Seq: b.seq, Kind: kind, Msg: b.err.Error()})
}

func recoveredMatches(ev Event, b *lineInfo) bool {
	var r Recovered
	if json.Unmarshal(ev.Data, &r) != nil {
		return false
	}
	sum := sha256.Sum256(b.raw)
	return r.DiscardedOffset == b.off && r.DiscardedBytes == int64(len(b.raw)) && r.DiscardedSHA256 == hex.EncodeToString(sum[:])
}

// check links a line whose own hash is right to the lines before it.
func (v *verifier) check(cur lineInfo, ev Event) {
	last, last2 := v.last, v.last2
	defer func() {
		v.sum.LastSeq, v.sum.Head = cur.seq, cur.hash
		if v.sum.FirstSeq == 0 {
			v.sum.FirstSeq = cur.seq
		}
		v.checkpoint(cur)
	}()
	switch {
	case last.no == 0: // first line
		if cur.seq != 1 || cur.prev != Genesis {
			v.add(Problem{Line: cur.no, Seq: cur.seq, Kind: BadStart, Msg: fmt.Sprintf("the log starts at seq %d, not 1 with the zero prev: lines were deleted from the front", cur.seq)})
		}
	case !last.ok:
		// The line before could not be decoded and was reported; chain to the
		// one before it if that works, otherwise start afresh here.
		if last2.ok && (cur.seq != last2.seq+1 || cur.prev != last2.hash) && cur.seq != last2.seq+2 {
			v.flushPending()
			v.add(Problem{Line: cur.no, Seq: cur.seq, Kind: Replaced, Msg: fmt.Sprintf("seq %d does not continue seq %d of line %d", cur.seq, last2.seq, last2.no)})
		}
	case cur.seq == last.seq+1 && cur.prev == last.hash:
		// chained
	case cur.seq == last.seq+1:
		// The link last→cur is broken. If the link before was broken too,
		// last itself was rewritten (its prev changed); otherwise decide
		// after the next line.
		if v.pending != nil && v.pending.Kind == Replaced && v.pending.Line == last2.no && last2.no != 0 {
			v.pending = &Problem{Line: last.no, Seq: last.seq, Kind: Replaced, Msg: fmt.Sprintf("it chains neither to line %d nor from line %d: this line was rewritten", last2.no, cur.no)}
			v.flushPending()
			break
		}
		v.flushPending()
		v.pending = &Problem{Line: last.no, Seq: last.seq, Kind: Replaced, Msg: fmt.Sprintf("line %d (seq %d) does not chain to it: this line was rewritten with a fresh hash, or replaced", cur.no, cur.seq)}
	case cur.hash == last.hash:
		v.flushPending()
		v.add(Problem{Line: cur.no, Seq: cur.seq, Kind: Inserted, Msg: fmt.Sprintf("it repeats line %d", last.no)})
		return
	case cur.seq == last.seq && last2.ok && cur.prev == last2.hash:
		v.flushPending()
		v.add(Problem{Line: last.no, Seq: last.seq, Kind: Inserted, Msg: fmt.Sprintf("line %d carries the same seq %d and chains to line %d: this line was inserted", cur.no, cur.seq, last2.no)})
		// The chain goes on from the line before the insertion.
		v.last2, v.last = last2, cur
		return
	case v.pending != nil && v.pending.Kind == Deleted && v.pending.Line == last.no && cur.seq+1 == last.seq && last2.ok && cur.prev == last2.hash && last.prev == cur.hash:
		v.pending = nil
		v.add(Problem{Line: last.no, Seq: last.seq, Kind: Reordered, Msg: fmt.Sprintf("seq %d comes before seq %d: lines %d and %d are swapped", last.seq, cur.seq, last.no, cur.no)})
		// Continue after the pair, from the higher seq.
		v.last2, v.last = cur, last
		return
	case cur.seq > last.seq+1:
		v.flushPending()
		n := cur.seq - last.seq - 1
		what := fmt.Sprintf("seq %d", last.seq+1)
		if n > 1 {
			what = fmt.Sprintf("seq %d-%d", last.seq+1, cur.seq-1)
		}
		v.pending = &Problem{Line: cur.no, Seq: cur.seq, Kind: Deleted, Msg: fmt.Sprintf("seq jumps from %d to %d: %d line(s) (%s) deleted before this line", last.seq, cur.seq, n, what)}
	default:
		v.flushPending()
		v.add(Problem{Line: cur.no, Seq: cur.seq, Kind: OutOfOrder, Msg: fmt.Sprintf("seq %d follows seq %d of line %d", cur.seq, last.seq, last.no)})
	}
	v.last2, v.last = last, cur
}

func (v *verifier) checkpoint(cur lineInfo) {
	cs, ok := v.cps[cur.seq]
	if !ok {
		return
	}
	for _, c := range cs {
		if c.Head != cur.hash {
			v.flushPending()
			v.add(Problem{Line: cur.no, Seq: cur.seq, Kind: Rewritten, Msg: fmt.Sprintf("hash %.12s… differs from the checkpoint signed at %s (%.12s…): the chain was rewritten at or before this line", cur.hash, c.Time.Format("2006-01-02T15:04:05Z07:00"), c.Head)})
		} else {
			v.sum.Checkpoints++
			if c.Seq > v.sum.LastCheckpointSeq {
				v.sum.LastCheckpointSeq = c.Seq
			}
		}
	}
	delete(v.cps, cur.seq)
}

func (v *verifier) finish() {
	if v.badLine != nil {
		v.report(*v.badLine)
		v.badLine = nil
	}
	v.flushPending()
	var missing []string
	var maxSeq uint64
	var maxCP Checkpoint
	for seq, cs := range v.cps {
		if seq > v.sum.LastSeq {
			if seq > maxSeq {
				maxSeq, maxCP = seq, cs[0]
			}
			continue
		}
		missing = append(missing, fmt.Sprint(seq))
	}
	if maxSeq > 0 {
		v.add(Problem{Line: v.sum.Lines + 1, Seq: maxSeq, Kind: Truncated, Msg: fmt.Sprintf("the log ends at seq %d (line %d) but a checkpoint signed at %s covers seq %d: the tail was truncated", v.sum.LastSeq, v.sum.Lines, maxCP.Time.Format("2006-01-02T15:04:05Z07:00"), maxSeq)})
	}
	if len(missing) > 0 {
		v.add(Problem{Kind: Rewritten, Msg: fmt.Sprintf("checkpointed seq %s not found in the log", strings.Join(missing, ", "))})
	}
}
