module github.com/securetrain/securetrain

go 1.25.0

require (
	github.com/opencontainers/runtime-spec v1.2.1
	github.com/urfave/cli/v2 v2.27.7
	golang.org/x/sys v0.38.0
	golang.org/x/term v0.37.0
	gopkg.in/yaml.v3 v3.0.1
)

require (
	github.com/cpuguy83/go-md2man/v2 v2.0.7 // indirect
	github.com/russross/blackfriday/v2 v2.1.0 // indirect
	github.com/xrash/smetrics v0.0.0-20240521201337-686a1a2994c1 // indirect
)
