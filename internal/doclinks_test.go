package internal_test

import (
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode"
)

// The README is a map: what a new user needs in the first ten minutes, and
// a table of contents of docs/. It stays under this many lines.
const readmeMaxLines = 250

// docFiles are the pages whose links must resolve inside the repository.
var docFiles = []string{"README.md", "docs/*.md", "packaging/*/README.md"}

// TestDocLinks checks every link of the README and of docs/: a relative link
// names a file or directory of the repository (never one outside it), and
// its #anchor is a heading of the target page, as GitHub makes them.
// Absolute http(s) links are not followed.
func TestDocLinks(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, g := range docFiles {
		m, err := filepath.Glob(filepath.Join(root, g))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	if len(files) < 2 {
		t.Fatalf("found only %v: run from the repository's internal directory", files)
	}
	external := 0
	for _, f := range files {
		problems, ext, err := checkDocLinks(root, f)
		if err != nil {
			t.Fatal(err)
		}
		external += ext
		for _, p := range problems {
			t.Error(p)
		}
	}
	t.Logf("%d pages checked, %d absolute links not followed", len(files), external)
}

// TestReadmeIsAMap keeps the README short.
func TestReadmeIsAMap(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(data), "\n"); n >= readmeMaxLines {
		t.Errorf("README.md has %d lines; keep it under %d and move details into docs/", n, readmeMaxLines)
	}
}

// TestReadmeListsEveryPage keeps the README's table of contents complete:
// every page of docs/ is linked from the README.
func TestReadmeListsEveryPage(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	linked := map[string]bool{}
	lines, _ := mdLines(string(data))
	for _, l := range lines {
		for _, m := range inlineRE.FindAllStringSubmatch(l, -1) {
			path, _, _ := strings.Cut(m[2], "#")
			linked[path] = true
		}
	}
	pages, err := filepath.Glob(filepath.Join("..", "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range pages {
		if name := "docs/" + filepath.Base(p); !linked[name] {
			t.Errorf("README.md does not link %s: add it to the table of contents", name)
		}
	}
}

// TestDocLinksCheckerFindsBrokenLinks feeds the checker pages with each
// kind of broken link, so that a checker that passes everything fails here.
func TestDocLinksCheckerFindsBrokenLinks(t *testing.T) {
	root := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("docs/page.md", "# A page\n\n## Limits: `cpus`, memory\n\n## Limits: `cpus`, memory\n")
	write("outside.md", "")
	good := write("docs/good.md", strings.Join([]string{
		"# Good",
		"[page](page.md), [section](page.md#limits-cpus-memory), [again](page.md#limits-cpus-memory-1)",
		"[here](#good) [web](https://example.org/x) [dir](../docs/) [up](../outside.md)",
		"`[not a link](nowhere.md)`",
		"```",
		"[not a link either](nowhere.md)",
		"```",
		"[ref]: page.md#a-page",
	}, "\n"))
	problems, ext, err := checkDocLinks(filepath.Join(root, "docs"), good)
	if err == nil && ext == 1 {
		// ../outside.md leaves the checked root (root/docs here): the one
		// expected problem.
		if len(problems) != 1 || !strings.Contains(problems[0], "outside the repository") {
			t.Errorf("good page: want only the link outside the root reported, got %q", problems)
		}
	} else {
		t.Errorf("good page: %d external links (want 1), error %v", ext, err)
	}
	for _, c := range []struct{ link, want string }{
		{"[gone](missing.md)", "no such file"},
		{"[anchor](page.md#no-such-heading)", "no heading"},
		{"[self](#nowhere)", "no heading"},
		{"[shared](../../shared/docs/style.md)", "outside the repository"},
		{"[abs](/etc/passwd)", "absolute path"},
		{"[ref]: missing.md", "no such file"},
	} {
		f := write("docs/bad.md", "# Bad\n\n"+c.link+"\n")
		problems, _, err := checkDocLinks(root, f)
		if err != nil {
			t.Fatal(err)
		}
		if len(problems) != 1 || !strings.Contains(problems[0], c.want) {
			t.Errorf("%s: want one problem saying %q, got %q", c.link, c.want, problems)
		}
	}
}

var (
	fenceRE    = regexp.MustCompile("^ {0,3}(```|~~~)")
	codeSpanRE = regexp.MustCompile("(`+)[^`].*?`+")
	inlineRE   = regexp.MustCompile(`!?\[([^\]]*)\]\(\s*<?([^)\s>]*)>?(?:\s+"[^"]*")?\s*\)`)
	refDefRE   = regexp.MustCompile(`^ {0,3}\[[^\]]+\]:\s*<?([^\s>]+)>?`)
	headingRE  = regexp.MustCompile(`^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$`)
	schemeRE   = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9+.-]*:`)
)

// mdLines returns the lines of a Markdown file outside fenced code blocks,
// with code spans removed; the line numbers are 1-based.
func mdLines(data string) (lines []string, numbers []int) {
	in := false
	for i, l := range strings.Split(data, "\n") {
		if fenceRE.MatchString(l) {
			in = !in
			continue
		}
		if in {
			continue
		}
		lines = append(lines, codeSpanRE.ReplaceAllString(l, ""))
		numbers = append(numbers, i+1)
	}
	return lines, numbers
}

// anchors lists the heading anchors of a Markdown file the way GitHub makes
// them: lower case, punctuation dropped, spaces as '-', a repeated heading
// numbered -1, -2, ....
func anchors(data string) map[string]bool {
	out := map[string]bool{}
	seen := map[string]int{}
	in := false
	for _, l := range strings.Split(data, "\n") {
		if fenceRE.MatchString(l) {
			in = !in
			continue
		}
		m := headingRE.FindStringSubmatch(l)
		if in || m == nil {
			continue
		}
		text := inlineRE.ReplaceAllString(m[1], "$1")
		var b strings.Builder
		for _, r := range strings.ToLower(text) {
			switch {
			case unicode.IsLetter(r), unicode.IsDigit(r), unicode.IsMark(r), r == '-', r == '_':
				b.WriteRune(r)
			case r == ' ':
				b.WriteByte('-')
			}
		}
		s := b.String()
		if n := seen[s]; n > 0 {
			out[fmt.Sprintf("%s-%d", s, n)] = true
		} else {
			out[s] = true
		}
		seen[s]++
	}
	return out
}

// checkDocLinks reports every link of file that does not resolve inside
// root, and counts the absolute (scheme) links it did not follow.
func checkDocLinks(root, file string) (problems []string, external int, err error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, 0, err
	}
	rel, _ := filepath.Rel(root, file)
	lines, numbers := mdLines(string(data))
	for i, l := range lines {
		var targets []string
		for _, m := range inlineRE.FindAllStringSubmatch(l, -1) {
			targets = append(targets, m[2])
		}
		if m := refDefRE.FindStringSubmatch(l); m != nil {
			targets = append(targets, m[1])
		}
		for _, target := range targets {
			where := fmt.Sprintf("%s:%d: link %q", rel, numbers[i], target)
			if schemeRE.MatchString(target) {
				if strings.HasPrefix(target, "file:") {
					problems = append(problems, where+": a file: URL; use a relative path inside the repository")
				} else {
					external++
				}
				continue
			}
			if p := checkTarget(root, file, target); p != "" {
				problems = append(problems, where+": "+p)
			}
		}
	}
	return problems, external, nil
}

// checkTarget resolves one relative link target of file and says what is
// wrong with it, or "".
func checkTarget(root, file, target string) string {
	path, anchor, _ := strings.Cut(target, "#")
	path, err := url.PathUnescape(path)
	if err != nil {
		return "not a valid path"
	}
	if strings.HasPrefix(path, "/") {
		return "an absolute path; use a path relative to the page"
	}
	dest := file
	if path != "" {
		dest = filepath.Join(filepath.Dir(file), filepath.FromSlash(path))
	}
	if r, err := filepath.Rel(root, dest); err != nil || r == ".." || strings.HasPrefix(r, ".."+string(filepath.Separator)) {
		return "points outside the repository"
	}
	st, err := os.Stat(dest)
	if err != nil {
		return "no such file in the repository"
	}
	if anchor == "" {
		return ""
	}
	if st.IsDir() || !strings.HasSuffix(dest, ".md") {
		return "an anchor into something that is not a Markdown page"
	}
	data, err := os.ReadFile(dest)
	if err != nil {
		return err.Error()
	}
	if !anchors(string(data))[anchor] {
		return fmt.Sprintf("no heading of %s has the anchor #%s", filepath.Base(dest), anchor)
	}
	return ""
}
