package app

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"github.com/securetrain/securetrain/pin"
)

// PinCommand is `securetrain pin DIR`: write the sha256sum-format manifest
// of a directory (stdout, or -o FILE), or with --check MANIFEST verify the
// directory against one.
var PinCommand = &cli.Command{
	Name:      "pin",
	Usage:     "write (or --check) the SHA-256 manifest of an input directory",
	ArgsUsage: "DIR",
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "write the manifest to `FILE` instead of stdout"},
		&cli.StringFlag{Name: "check", Usage: "verify DIR against the manifest `FILE` instead of writing one"},
		&cli.StringFlag{Name: "cache", Usage: "verification cache `DIR` (must be owned by you, mode 0700)"},
	},
	Action: func(c *cli.Context) error {
		args, err := positional(c)
		if err != nil {
			return cli.Exit("pin: "+err.Error(), 2)
		}
		if len(args) != 1 {
			return cli.Exit("pin: give exactly one DIR", 2)
		}
		dir, err := filepath.Abs(args[0])
		if err != nil {
			return cli.Exit("pin: "+err.Error(), 2)
		}
		var opts pin.Options
		if cd := c.String("cache"); cd != "" {
			cache, err := pin.OpenCache(cd)
			if err != nil {
				return cli.Exit("pin: "+err.Error(), 2)
			}
			opts.Cache = cache
		}
		v := pin.New(opts)
		if m := c.String("check"); m != "" {
			b, err := os.ReadFile(m)
			if err != nil {
				return cli.Exit("pin: "+err.Error(), 2)
			}
			es, err := pin.ParseManifest(bytes.NewReader(b))
			if err != nil {
				return cli.Exit(fmt.Sprintf("pin: %s: %v", m, err), 2)
			}
			res, err := v.Verify(c.Context, pin.Pin{Path: dir, Dir: true, Manifest: es})
			if err != nil {
				return cli.Exit("pin: "+err.Error(), 1)
			}
			fmt.Fprintf(c.App.Writer, "%s: %d files verified (%d hashed, %d from cache)\n", dir, res.Stats.Files, res.Stats.Hashed, res.Stats.Cached)
			return nil
		}
		es, _, err := v.Manifest(c.Context, dir)
		if err != nil {
			return cli.Exit("pin: "+err.Error(), 1)
		}
		var buf bytes.Buffer
		if err := pin.WriteManifest(&buf, es); err != nil {
			return cli.Exit("pin: "+err.Error(), 1)
		}
		if o := c.String("output"); o != "" {
			if err := os.WriteFile(o, buf.Bytes(), 0o644); err != nil {
				return cli.Exit("pin: "+err.Error(), 1)
			}
			fmt.Fprintf(c.App.ErrWriter, "%s: %d files, manifest sha256 %s\n", o, len(es), pin.ManifestDigest(es))
			return nil
		}
		_, err = c.App.Writer.Write(buf.Bytes())
		return err
	},
}
