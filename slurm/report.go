package slurm

import (
	"context"
	"fmt"
	"strings"
)

// maxComment bounds what ReportUsage writes (Slurm keeps comments in its
// job record and accounting database).
const maxComment = 1000

// ReportUsage writes text into Slurm job id's AdminComment (scontrol update
// as root; the job's user cannot change it), so that what a sandbox used,
// outside the job's own cgroups, shows in `scontrol show job` and, with
// accounting storage, in `sacct -o AdminComment`. Newlines become "; ";
// the text is cut at 1000 bytes. The job must still be pending or running.
func (c *Client) ReportUsage(ctx context.Context, id uint64, text string) error {
	text = strings.Join(strings.Fields(strings.ReplaceAll(strings.TrimSpace(text), "\n", "; ")), " ")
	if len(text) > maxComment {
		text = strings.ToValidUTF8(text[:maxComment], "")
	}
	if _, err := c.tool(ctx, "scontrol", "update", fmt.Sprintf("JobId=%d", id), "AdminComment="+text); err != nil {
		return fmt.Errorf("slurm job %d: report usage: %w", id, err)
	}
	return nil
}
