// Package app holds securetrain's CLI verbs, one exported *cli.Command per
// file; main wires them into the app.
package app

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/securetrain/securetrain/audit"
)

// AuditCommand is `securetrain audit`: verify and read the audit log.
var AuditCommand = &cli.Command{
	Name:  "audit",
	Usage: "verify or show the tamper-evident audit log",
	Subcommands: []*cli.Command{
		{
			Name:      "verify",
			Usage:     "check the hash chain (and signed checkpoints) of the audit log",
			ArgsUsage: "[LOG]",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "checkpoints", Usage: "file of signed checkpoints (JSON lines) to check the chain head against"},
				&cli.StringFlag{Name: "key", Usage: "ed25519 public key (PEM or base64) that signed the checkpoints"},
				&cli.StringFlag{Name: "log-id", Usage: "use only the checkpoints of this log id (default: all in the file)"},
			},
			Action: auditVerify,
		},
		{
			Name:      "show",
			Usage:     "print audit events",
			ArgsUsage: "[LOG]",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "job", Usage: "only events of this job id"},
				&cli.StringFlag{Name: "type", Usage: "only events of this type (job_start, violation, exit, ...)"},
				&cli.BoolFlag{Name: "json", Usage: "print the raw lines"},
			},
			Action: auditShow,
		},
	},
}

func logArg(c *cli.Context) (string, error) {
	switch c.NArg() {
	case 0:
		return audit.DefaultPath, nil
	case 1:
		return c.Args().First(), nil
	}
	return "", fmt.Errorf("audit %s: want at most one LOG argument, got %d", c.Command.Name, c.NArg())
}

func auditVerify(c *cli.Context) error {
	path, err := logArg(c)
	if err != nil {
		return err
	}
	var opts audit.VerifyOptions
	cpFile, keyFile := c.String("checkpoints"), c.String("key")
	if (cpFile == "") != (keyFile == "") {
		return errors.New("audit verify: --checkpoints and --key go together")
	}
	if cpFile != "" {
		kb, err := os.ReadFile(keyFile)
		if err != nil {
			return fmt.Errorf("audit verify --key: %w", err)
		}
		pub, err := audit.ParseEd25519PublicKey(kb)
		if err != nil {
			return fmt.Errorf("audit verify --key %s: %w", keyFile, err)
		}
		cps, err := audit.ReadCheckpointFile(cpFile)
		if err != nil {
			return fmt.Errorf("audit verify --checkpoints: %w", err)
		}
		opts = audit.VerifyOptions{Checkpoints: cps, Verifier: audit.Ed25519Verifier{Key: pub}, LogID: c.String("log-id"), RequireCheckpoint: true}
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("audit verify: %w", err)
	}
	defer f.Close()
	sum, err := audit.VerifyLog(c.Context, f, opts)
	w := c.App.Writer
	var ve *audit.VerifyError
	if errors.As(err, &ve) {
		for _, p := range ve.Problems {
			fmt.Fprintf(w, "%s: %s\n", path, p)
		}
		if ve.More > 0 {
			fmt.Fprintf(w, "%s: ... and %d more problems\n", path, ve.More)
		}
		return fmt.Errorf("audit log %s does not verify: %d problem(s), first at %s", path, len(ve.Problems)+ve.More, ve.Problems[0])
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "%s: OK: %d lines, seq %d-%d, head %.16s…", path, sum.Lines, sum.FirstSeq, sum.LastSeq, sum.Head)
	if sum.Recovered > 0 {
		fmt.Fprintf(w, ", %d partial line(s) from crashes recorded", sum.Recovered)
	}
	if cpFile != "" {
		fmt.Fprintf(w, "; %d checkpoint(s) match, the last at seq %d (%d line(s) after it not yet covered)", sum.Checkpoints, sum.LastCheckpointSeq, sum.LastSeq-sum.LastCheckpointSeq)
	} else {
		fmt.Fprint(w, "; no checkpoints given: truncation and a recomputed chain cannot be seen")
	}
	fmt.Fprintln(w)
	return nil
}

func auditShow(c *cli.Context) error {
	path, err := logArg(c)
	if err != nil {
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("audit show: %w", err)
	}
	defer f.Close()
	return showEvents(c.App.Writer, f, c.String("job"), c.String("type"), c.Bool("json"))
}

func showEvents(w io.Writer, r io.Reader, job, typ string, raw bool) error {
	br := bufio.NewReaderSize(r, 256<<10)
	bw := bufio.NewWriter(w)
	defer bw.Flush()
	for no := 1; ; no++ {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 {
			ev, derr := audit.Decode(line)
			switch {
			case derr != nil:
				if job == "" && typ == "" {
					fmt.Fprintf(bw, "line %d: not an audit event: %v\n", no, derr)
				}
			case job != "" && ev.Job != job, typ != "" && string(ev.Type) != typ:
			case raw:
				bw.Write(line)
				if line[len(line)-1] != '\n' {
					bw.WriteByte('\n')
				}
			default:
				fmt.Fprintf(bw, "%6d %s %-13s job=%s user=%s %s\n", ev.Seq, ev.Time.Format("2006-01-02T15:04:05.000Z07:00"), ev.Type, dash(ev.Job), dash(ev.User), strings.TrimSpace(string(ev.Data)))
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("audit show: line %d: %w", no, err)
		}
	}
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
