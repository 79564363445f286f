package provenance

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Distribution is one installed Python distribution, from its metadata.
type Distribution struct {
	Name     string `json:"name"`
	Version  string `json:"version"`
	Metadata string `json:"metadataSha256"` // digest of the METADATA / PKG-INFO file
	Dir      string `json:"dir"`            // the site-packages directory it was found in
}

// Distributions lists the distributions in the given site-packages /
// dist-packages directories by reading *.dist-info/METADATA and
// *.egg-info/PKG-INFO (or a *.egg-info file). Python is never started and
// nothing else in the directories is read, so a hostile .pth file or
// sitecustomize runs nothing. It returns the list sorted by name and a
// digest over "name==version" lines.
func Distributions(ctx context.Context, dirs []string) ([]Distribution, string, error) {
	var out []Distribution
	for _, dir := range dirs {
		ents, err := os.ReadDir(dir)
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			return nil, "", fmt.Errorf("python distributions: %w", err)
		}
		for _, e := range ents {
			if err := ctx.Err(); err != nil {
				return nil, "", err
			}
			var meta string
			switch name := e.Name(); {
			case strings.HasSuffix(name, ".dist-info") && e.IsDir():
				meta = filepath.Join(dir, name, "METADATA")
			case strings.HasSuffix(name, ".egg-info") && e.IsDir():
				meta = filepath.Join(dir, name, "PKG-INFO")
			case strings.HasSuffix(name, ".egg-info") && e.Type().IsRegular():
				meta = filepath.Join(dir, name)
			default:
				continue
			}
			b, err := readMetadataFile(meta)
			if err != nil {
				continue // broken or hostile entry: not a distribution Python would list either
			}
			n, v := parseMetadata(b)
			if n == "" {
				continue
			}
			sum := sha256.Sum256(b)
			out = append(out, Distribution{Name: n, Version: v, Metadata: hex.EncodeToString(sum[:]), Dir: dir})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := strings.ToLower(out[i].Name), strings.ToLower(out[j].Name)
		if a != b {
			return a < b
		}
		if out[i].Version != out[j].Version {
			return out[i].Version < out[j].Version
		}
		return out[i].Dir < out[j].Dir
	})
	h := sha256.New()
	for _, d := range out {
		fmt.Fprintf(h, "%s==%s\n", d.Name, d.Version)
	}
	return out, hex.EncodeToString(h.Sum(nil)), nil
}

// parseMetadata reads the Name and Version headers (RFC 822 style, up to
// the first blank line).
func parseMetadata(b []byte) (name, version string) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if l == "" {
			break
		}
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			continue
		}
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "name":
			if name == "" {
				name = strings.TrimSpace(v)
			}
		case "version":
			if version == "" {
				version = strings.TrimSpace(v)
			}
		}
	}
	return name, version
}

// SitePackagesUnder lists the usual interpreter package directories under
// root ("/" for the host, or the job's root filesystem, or a venv prefix).
func SitePackagesUnder(root string) []string {
	var out []string
	for _, pat := range []string{
		"lib/python3*/site-packages", "lib/python3/dist-packages",
		"usr/lib/python3/dist-packages", "usr/lib/python3*/site-packages",
		"usr/local/lib/python3*/dist-packages", "usr/local/lib/python3*/site-packages",
	} {
		m, _ := filepath.Glob(filepath.Join(root, pat))
		out = append(out, m...)
	}
	sort.Strings(out)
	return out
}
