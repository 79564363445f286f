package scan

import (
	"archive/zip"
	"bufio"
	"fmt"
	"io"
	"path"
	"strings"
)

// scanZip handles PyTorch zip checkpoints (every *.pkl member is a pickle
// torch.load may read), NumPy .npz archives (members with the NUMPY magic)
// and recognises archives it cannot judge (TorchScript, Keras v3).
func scanZip(r io.ReaderAt, size int64, rep *Report) {
	zr, err := zip.NewReader(r, size)
	if err != nil {
		rep.Format = "zip"
		rep.add(Finding{Verdict: Malformed, Detail: "zip archive: " + err.Error()})
		return
	}
	checkZipConsistency(r, size, rep)
	var pkls, others []*zip.File
	torchscript, keras := false, false
	for _, f := range zr.File {
		base := path.Base(f.Name)
		switch {
		case strings.HasSuffix(asciiLower(f.Name), ".pkl"):
			// Every pickle member, in any letter case: PyTorch's
			// lookup of data.pkl ignores case.
			pkls = append(pkls, f)
		case strings.Contains(f.Name, "/code/") && (strings.HasSuffix(f.Name, ".py") || strings.HasSuffix(f.Name, ".debug_pkl")):
			torchscript = true
		case base == "config.json" || base == "model.weights.h5" || base == "metadata.json":
			keras = keras || f.Name == base
			others = append(others, f)
		default:
			others = append(others, f)
		}
	}
	switch {
	case len(pkls) > 0:
		rep.Format = "pytorch-zip"
		if torchscript {
			rep.Format = "torchscript"
			rep.add(Finding{Verdict: Unsupported, Detail: "TorchScript archive: its code/ runs when loaded; accept it by digest or save a state_dict"})
		}
		for _, f := range pkls {
			rc, err := f.Open()
			if err != nil {
				rep.add(Finding{Verdict: Malformed, Member: f.Name, Detail: err.Error()})
				continue
			}
			scanPickleStream(rc, f.Name, rep)
			rc.Close()
		}
		// np.load reads the same file as an .npz: its arrays are
		// scanned too.
		for _, f := range others {
			scanZipNpy(f, rep)
		}
	case keras:
		rep.Format = "keras"
		rep.add(Finding{Verdict: Unsupported, Detail: "Keras archive: Lambda layers carry code; accept it by digest or export weights as safetensors"})
	default:
		npys := 0
		for _, f := range others {
			if isNpy, opened := scanZipNpy(f, rep); isNpy {
				npys++
			} else if opened && !strings.HasSuffix(f.Name, "/") {
				rep.add(Finding{Verdict: Unsupported, Member: f.Name, Detail: "archive member is not a NumPy array"})
			}
		}
		rep.Format = "npz"
		if npys == 0 {
			rep.Format = "zip"
			rep.add(Finding{Verdict: Unsupported, Detail: fmt.Sprintf("zip archive with %d members and no data.pkl or .npy", len(zr.File))})
		}
	}
}

// scanZipNpy scans a member that starts with the NUMPY magic.
func scanZipNpy(f *zip.File, rep *Report) (isNpy, opened bool) {
	rc, err := f.Open()
	if err != nil {
		rep.add(Finding{Verdict: Malformed, Member: f.Name, Detail: err.Error()})
		return false, false
	}
	defer rc.Close()
	br := bufio.NewReaderSize(rc, 64<<10)
	if h, _ := br.Peek(6); string(h) != "\x93NUMPY" {
		return false, true
	}
	scanNpy(br, int64(f.UncompressedSize64), f.Name, rep)
	return true, true
}
