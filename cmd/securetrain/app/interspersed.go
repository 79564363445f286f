package app

import (
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"
)

// positional returns the command's positional arguments, applying any
// flags that follow them (urfave/cli v2 stops parsing flags at the first
// argument, but the documented usage is `verify ATTESTATION --key FILE`).
// "--" ends flag handling.
func positional(c *cli.Context) ([]string, error) {
	bools := map[string]bool{}
	known := map[string][]string{} // any name -> all names of the flag
	for _, f := range c.Command.Flags {
		_, isBool := f.(*cli.BoolFlag)
		for _, n := range f.Names() {
			known[n] = f.Names()
			bools[n] = isBool
		}
	}
	var pos []string
	args := c.Args().Slice()
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			pos = append(pos, a)
			continue
		}
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if known[name] == nil {
			return nil, fmt.Errorf("unknown flag %s", a)
		}
		if !hasVal {
			if bools[name] {
				val = "true"
			} else {
				if i+1 >= len(args) {
					return nil, fmt.Errorf("flag %s needs a value", a)
				}
				i++
				val = args[i]
			}
		}
		// Each alias is its own flag in the flag set: set them all, so
		// `pin DIR -o FILE` is read by c.String("output").
		for _, n := range known[name] {
			if err := c.Set(n, val); err != nil {
				return nil, fmt.Errorf("flag %s: %w", a, err)
			}
		}
	}
	return pos, nil
}
