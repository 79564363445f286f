// Package scan reads model files without executing them and says whether
// loading them could run code. The parser is chosen by the file's content
// (magic bytes), never its name: Python pickles (protocols 0 to 5), PyTorch
// checkpoints (zip archives with data.pkl, the legacy pickle sequence and
// the legacy tar archive), NumPy .npy/.npz (object arrays hold pickles) and
// safetensors headers. Each is read the way its loader reads it
// (numpy.lib.format's header rules, PyTorch's case-insensitive zip lookup,
// Python's tarfile), and a file that parses as two formats at once is
// refused as ambiguous: loaders choose between them by different rules.
//
// A pickle that imports anything outside an allowlist of what tensor
// checkpoints need is Dangerous; a file that cannot be read is Malformed; a
// format this package cannot judge (compressed pickles, joblib, Keras,
// TorchScript, HDF5, ...) is Unsupported. Only Safe means "loading this does
// not import anything that could run code".
package scan

import (
	"archive/zip"
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"unicode/utf8"
)

// Verdict of a scan, ordered by severity: a report's verdict is the worst of
// its findings.
type Verdict int

const (
	Safe        Verdict = iota // nothing found that could run code on load
	Unsupported                // a format the scanner cannot judge
	Malformed                  // unreadable, truncated, or not a known format
	Dangerous                  // imports something that can run code
)

var verdictNames = [...]string{"safe", "unsupported", "malformed", "dangerous"}

func (v Verdict) String() string {
	if v < 0 || int(v) >= len(verdictNames) {
		return fmt.Sprintf("verdict(%d)", int(v))
	}
	return verdictNames[v]
}

// MarshalText implements encoding.TextMarshaler.
func (v Verdict) MarshalText() ([]byte, error) { return []byte(v.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (v *Verdict) UnmarshalText(b []byte) error {
	for i, n := range verdictNames {
		if n == string(b) {
			*v = Verdict(i)
			return nil
		}
	}
	return fmt.Errorf("unknown verdict %q (want safe, unsupported, malformed or dangerous)", b)
}

// Finding is one reason for a verdict.
type Finding struct {
	Verdict Verdict `json:"verdict"`
	Member  string  `json:"member,omitempty"` // entry inside an archive
	Offset  int64   `json:"offset"`           // opcode offset in the pickle (member), when it applies
	Opcode  string  `json:"opcode,omitempty"` // GLOBAL, STACK_GLOBAL, INST, EXT
	Import  string  `json:"import,omitempty"` // module.name
	Detail  string  `json:"detail"`
}

func (f Finding) String() string {
	var b strings.Builder
	b.WriteString(f.Verdict.String())
	if f.Member != "" {
		fmt.Fprintf(&b, " in %s", f.Member)
	}
	if f.Opcode != "" {
		fmt.Fprintf(&b, " at offset %d (%s)", f.Offset, f.Opcode)
	}
	b.WriteString(": ")
	b.WriteString(f.Detail)
	return b.String()
}

// Report is the result of scanning one file.
type Report struct {
	Path     string    `json:"path"`
	Format   string    `json:"format"` // pickle, pytorch-zip, pytorch-legacy, npy, npz, safetensors, or what was recognised
	Verdict  Verdict   `json:"verdict"`
	Findings []Finding `json:"findings,omitempty"`
	Imports  []string  `json:"imports,omitempty"` // every module.name imported, sorted
	Formats  []string  `json:"formats,omitempty"` // every format the file parses as, when it is more than one (refused)
}

func (r *Report) add(f Finding) {
	r.Findings = append(r.Findings, f)
	if f.Verdict > r.Verdict {
		r.Verdict = f.Verdict
	}
}

func (r *Report) addImport(s string) {
	i := sort.SearchStrings(r.Imports, s)
	if i < len(r.Imports) && r.Imports[i] == s {
		return
	}
	r.Imports = append(r.Imports, "")
	copy(r.Imports[i+1:], r.Imports[i:])
	r.Imports[i] = s
}

// Summary is one line for a person. For a file that is two formats at
// once it starts with that, whatever else was found.
func (r *Report) Summary() string {
	s := r.Verdict.String()
	for _, f := range r.Findings {
		if f.Verdict == r.Verdict {
			s = f.String()
			break
		}
	}
	if amb := ambiguity(r.Formats); amb != "" && !strings.Contains(s, amb) {
		s = amb + "; " + s
	}
	return s
}

func ambiguity(formats []string) string {
	if len(formats) < 2 {
		return ""
	}
	return "ambiguous file: it parses as " + strings.Join(formats, " and ")
}

// ErrNotRegular is returned for a path that is not a regular file.
var ErrNotRegular = errors.New("not a regular file")

// Scan reads the file at path and returns its report. The error is for a
// file that could not be read at all (missing, not regular, I/O error); a
// file that is read but bad is a report with a Malformed verdict.
func Scan(path string) (*Report, error) {
	f, err := openRegular(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("scan %s: %w", path, err)
	}
	rep := &Report{Path: path}
	ScanReaderAt(f, st.Size(), rep)
	return rep, nil
}

// ScanBytes scans an in-memory file.
func ScanBytes(name string, b []byte) *Report {
	rep := &Report{Path: name}
	ScanReaderAt(bytes.NewReader(b), int64(len(b)), rep)
	return rep
}

// ScanReaderAt scans size bytes of r into rep. It never panics on hostile
// input; whatever it cannot follow is a Malformed finding.
func ScanReaderAt(r io.ReaderAt, size int64, rep *Report) {
	defer func() {
		if p := recover(); p != nil {
			rep.add(Finding{Verdict: Malformed, Detail: fmt.Sprintf("scanner error: %v", p)})
		}
	}()
	head := make([]byte, 512)
	n, _ := r.ReadAt(head, 0)
	head = head[:n]
	sr := io.NewSectionReader(r, 0, size)
	if formats := interpretations(r, size, head); len(formats) > 1 {
		// Loaders pick by different rules (torch.load: zip header,
		// then tarfile, then pickle; np.load: zip header, NUMPY magic,
		// then pickle; zipfile: the directory at the end), so a file
		// that is two formats is whichever its loader picks. Refuse
		// it, and show what each reading holds.
		rep.Formats = formats
		rep.add(Finding{Verdict: Malformed, Detail: ambiguity(formats) + " (a polyglot); loaders disagree on which it is"})
		for _, f := range formats {
			scanAs(f, r, size, rep)
		}
		rep.Format = strings.Join(formats, "+")
		return
	}
	switch {
	case n == 0:
		rep.Format = "empty"
		rep.add(Finding{Verdict: Malformed, Detail: "empty file"})
	case bytes.HasPrefix(head, []byte("PK\x03\x04")) || bytes.HasPrefix(head, []byte("PK\x05\x06")):
		scanZip(r, size, rep)
	case bytes.HasPrefix(head, []byte("\x93NUMPY")):
		rep.Format = "npy"
		scanNpy(sr, size, "", rep)
	case isTar(head):
		scanTar(r, size, rep)
	case n >= 2 && head[0] == 0x80 && head[1] <= 5:
		rep.Format = scanPickleStream(sr, "", rep)
	case isSafetensors(head, size):
		rep.Format = "safetensors"
		scanSafetensors(r, size, rep)
	default:
		if name := unsupportedMagic(head); name != "" {
			rep.Format = name
			rep.add(Finding{Verdict: Unsupported, Detail: name + " files cannot be checked; decompress/convert them, or accept the file by digest"})
			return
		}
		if isPickleOpcode(head[0]) {
			rep.Format = scanPickleStream(sr, "", rep)
			return
		}
		if looksText(r, size) {
			// README, config.json, tokenizer files: data, not a model
			// format a loader unpickles.
			rep.Format = "text"
			return
		}
		rep.Format = "unknown"
		rep.add(Finding{Verdict: Malformed, Detail: "not a recognised model format (pickle, PyTorch, NumPy, safetensors)"})
	}
}

// interpretations lists the formats the file parses as, each by the rule
// of the loaders that read it: a zip header at the start (torch.load,
// np.load) or an end-of-directory record (zipfile), the NUMPY magic, a
// first block tarfile takes as a header, a safetensors header that is a
// JSON object, and a first pickle that unpickles to its STOP.
func interpretations(r io.ReaderAt, size int64, head []byte) []string {
	var fs []string
	if bytes.HasPrefix(head, []byte("PK\x03\x04")) || bytes.HasPrefix(head, []byte("PK\x05\x06")) {
		fs = append(fs, "zip")
	} else if _, err := zip.NewReader(r, size); err == nil {
		fs = append(fs, "zip")
	}
	if bytes.HasPrefix(head, []byte("\x93NUMPY")) {
		fs = append(fs, "npy")
	}
	if isTar(head) {
		fs = append(fs, "tar")
	}
	if isSafetensors(head, size) {
		hdr := make([]byte, le64(head[:8]))
		if _, err := r.ReadAt(hdr, 8); err == nil && json.Valid(hdr) {
			fs = append(fs, "safetensors")
		}
	}
	// The pickle reading matters only beside another one (a single
	// format is scanned as itself below): skip the walk otherwise, so a
	// large pickle is read once.
	if len(fs) > 0 && len(head) > 0 && isPickleOpcode(head[0]) {
		w := &walker{rd: &preader{r: bufio.NewReaderSize(io.NewSectionReader(r, 0, size), int(min(size, 64<<10)))}, rep: &Report{}}
		if err := w.walk(); err == nil || errors.Is(err, errStop) {
			fs = append(fs, "pickle")
		}
	}
	return fs
}

// scanAs scans the whole file as one format.
func scanAs(format string, r io.ReaderAt, size int64, rep *Report) {
	sr := io.NewSectionReader(r, 0, size)
	switch format {
	case "zip":
		scanZip(r, size, rep)
	case "npy":
		scanNpy(sr, size, "", rep)
	case "tar":
		scanTar(r, size, rep)
	case "safetensors":
		scanSafetensors(r, size, rep)
	case "pickle":
		scanPickleStream(sr, "", rep)
	}
}

// unsupportedMagic recognises formats that can carry code (or hide a
// pickle) that this scanner does not read.
func unsupportedMagic(h []byte) string {
	switch {
	case bytes.HasPrefix(h, []byte{0x1f, 0x8b}):
		return "gzip"
	case bytes.HasPrefix(h, []byte("BZh")):
		return "bzip2"
	case bytes.HasPrefix(h, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		return "xz"
	case bytes.HasPrefix(h, []byte{0x5d, 0, 0}):
		return "lzma"
	case bytes.HasPrefix(h, []byte{0x28, 0xb5, 0x2f, 0xfd}):
		return "zstd"
	case bytes.HasPrefix(h, []byte{0x04, 0x22, 0x4d, 0x18}):
		return "lz4"
	case bytes.HasPrefix(h, []byte("ZF0x")):
		return "joblib-zlib"
	case bytes.HasPrefix(h, []byte{0x78, 0x9c}), bytes.HasPrefix(h, []byte{0x78, 0x01}), bytes.HasPrefix(h, []byte{0x78, 0xda}):
		return "zlib"
	case bytes.HasPrefix(h, []byte("\x89HDF\r\n\x1a\n")):
		return "hdf5 (Keras)"
	case bytes.HasPrefix(h, []byte("GGUF")):
		return "gguf"
	case len(h) >= 262 && string(h[257:262]) == "ustar":
		return "tar"
	}
	return ""
}

// isPickleOpcode reports whether b is a pickle opcode. CPython does not
// require PROTO first: a stream starting with any opcode is unpickled (and
// one starting with anything else fails at its first byte, importing
// nothing).
func isPickleOpcode(b byte) bool {
	return strings.IndexByte("(.0123FIJKLMNPQRSTUVXabcdeghijlopqrstu}])GBC", b) >= 0 || b >= 0x80 && b <= 0x98
}

func openRegular(path string) (*os.File, error) {
	// Refuse a FIFO or device before opening it: opening some devices has
	// effects. The fstat below catches a swap between the two.
	if st, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("scan %s: %w", path, err)
	} else if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("scan %s: %w (%v)", path, ErrNotRegular, st.Mode().Type())
	}
	f, err := openForScan(path)
	if err != nil {
		return nil, fmt.Errorf("scan %s: %w", path, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("scan %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("scan %s: %w (%v)", path, ErrNotRegular, st.Mode().Type())
	}
	return f, nil
}

// looksText reports whether the file starts with at least 64 KiB (or all)
// of UTF-8 text without control characters other than whitespace.
func looksText(r io.ReaderAt, size int64) bool {
	b := make([]byte, min(size, 64<<10))
	n, _ := r.ReadAt(b, 0)
	b = b[:n]
	if n == 0 {
		return false
	}
	for _, c := range b {
		if c < 0x20 && c != '\t' && c != '\n' && c != '\r' && c != '\f' || c == 0x7f {
			return false
		}
	}
	if int64(n) < size {
		// Allow a rune cut at the end of the window.
		for i := 0; i < utf8.UTFMax && len(b) > 0 && !utf8.Valid(b); i++ {
			b = b[:len(b)-1]
		}
	}
	return utf8.Valid(b)
}
