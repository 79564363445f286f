package netguard

// CheckResult is one line of `securetrain check`.
type CheckResult struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail,omitempty"` // what is wrong and what to do, or what was found
}
