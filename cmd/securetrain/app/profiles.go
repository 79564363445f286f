package app

import (
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/urfave/cli/v2"
	"gopkg.in/yaml.v3"

	"github.com/securetrain/securetrain/configs"
)

// ProfilesCommand lists the profiles, or shows one with its defaults filled.
var ProfilesCommand = &cli.Command{
	Name:      "profiles",
	Usage:     "list profiles (shipped and the admin's), or show one with defaults filled in",
	ArgsUsage: "[NAME|FILE]",
	Action: func(c *cli.Context) error {
		h, err := loadHost(c)
		if err != nil {
			return err
		}
		if c.NArg() == 1 {
			p, err := configs.LoadProfile(c.Args().First(), h.ProfileDir)
			if err != nil {
				return err
			}
			fmt.Printf("# %s (%s)\n", p.Source, p.Digest)
			enc := yaml.NewEncoder(os.Stdout)
			enc.SetIndent(2)
			return enc.Encode(p)
		}
		refs, lerr := configs.ListProfiles(h.ProfileDir)
		w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "NAME\tSOURCE\tDESCRIPTION")
		for _, r := range refs {
			fmt.Fprintf(w, "%s\t%s\t%s\n", r.Name, r.Source, r.Description)
		}
		w.Flush()
		return lerr
	},
}
