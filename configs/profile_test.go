package configs

import (
	"errors"
	"strings"
	"testing"
)

// secretsOK is a valid secrets section; cases below add one mistake to it.
const secretsOK = `vault:
  token_role: job
  policies: [reader]
secrets:
- path: database/creds/reader
  env: {DB_PASS: password}
`

const allowedTop = "description, env, gpu, inputs, integrity, limits, name, network, sandbox, secrets, vault, version"
const allowedLimits = "cpu_seconds, cpus, gpu_memory, gpu_seconds, gpus, grace, home, memory, pids, scratch, shm, stop_grace, wall_time"

const sha = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func TestParseProfileErrors(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		// Format: unknown fields, duplicates, wrong types, version.
		{"unknown top-level", "version: 1\nlimit: {}\n",
			"p.yaml:2: limit: unknown field; allowed: " + allowedTop},
		{"unknown nested", "version: 1\nlimits:\n  cpu: 2\n",
			"p.yaml:3: limits.cpu: unknown field; allowed: " + allowedLimits},
		{"unknown two deep", "version: 1\nlimits:\n  grace:\n    memory: 1s\n",
			"p.yaml:4: limits.grace.memory: unknown field; allowed: cpus, gpu_memory"},
		{"unknown in list element", "version: 1\ninputs:\n- pth: /x\n",
			"p.yaml:3: inputs[0].pth: unknown field; allowed: accept, kind, manifest, name, path, sha256, signature, target"},
		{"unknown key with newline stays one line", "version: 1\n\"a\\nb\": 1\n",
			`p.yaml:2: "a\nb": unknown field; allowed: ` + allowedTop},
		{"duplicate top-level", "version: 1\nversion: 1\n", "p.yaml:2: version: appears twice"},
		{"duplicate nested", "version: 1\nlimits:\n  cpus: 1\n  cpus: 2\n", "p.yaml:4: limits.cpus: appears twice"},
		{"duplicate map key", "version: 1\nenv:\n  set: {A: x, A: y}\n", "p.yaml:3: env.set.A: appears twice"},
		{"duplicate via alias key", "version: 1\nlimits: {&cpus memory: 1GiB, *cpus: 2GiB}\n", "p.yaml:2: limits.memory: appears twice"},
		{"string for cpus", "version: 1\nlimits: {cpus: \"2\"}\n", `p.yaml:2: limits.cpus: want a number, got "2"`},
		{"word for cpus", "version: 1\nlimits: {cpus: two}\n", `p.yaml:2: limits.cpus: want a number, got "two"`},
		{"list for limits", "version: 1\nlimits: [1, 2]\n", "p.yaml:2: limits: want a mapping (key: value lines), got a list"},
		{"scalar for limits", "version: 1\nlimits: big\n", `p.yaml:2: limits: want a mapping (key: value lines), got "big"`},
		{"bool for string", "version: 1\nsandbox: {rootfs: true}\n", "p.yaml:2: sandbox.rootfs: want a string, got true (quote it)"},
		{"bool for map value", "version: 1\nenv:\n  set: {DEBUG: false}\n", "p.yaml:3: env.set.DEBUG: want a string, got false (quote it)"},
		{"binary for string", "version: 1\nsandbox: {rootfs: !!binary L2V0Yw==}\n", "p.yaml:2: sandbox.rootfs: want a plain string, got !!binary"},
		{"list for string", "version: 1\nname: [a]\n", "p.yaml:2: name: want a string, got a list"},
		{"mapping for list", "version: 1\nsandbox: {mask: {a: b}}\n", "p.yaml:2: sandbox.mask: want a list, got a mapping"},
		{"scalar for list", "version: 1\nnetwork: {allow: example.com}\n", `p.yaml:2: network.allow: want a list, got "example.com"`},
		{"scalar for map", "version: 1\nenv: {set: x}\n", `p.yaml:2: env.set: want a mapping, got "x"`},
		{"float for int", "version: 1\nlimits: {pids: 1.5}\n", `p.yaml:2: limits.pids: want an integer, got "1.5"`},
		{"float version", "version: 1.5\n", `p.yaml:1: version: want an integer, got "1.5"`},
		{"integral float for int", "version: 1\nlimits: {pids: 4096.0}\n", `p.yaml:2: limits.pids: want an integer, got "4096.0"`},
		{"huge int", "version: 1\nlimits: {pids: 99999999999999999999}\n", `p.yaml:2: limits.pids: want an integer, got "99999999999999999999"`},
		{"word for bool", "version: 1\nintegrity: {provenance: maybe}\n", `p.yaml:2: integrity.provenance: want true or false, got "maybe"`},
		{"list for bool", "version: 1\nnetwork: {unrestricted: []}\n", "p.yaml:2: network.unrestricted: want true or false, got a list"},
		{"non-scalar key", "version: 1\nlimits:\n  ? [a]\n  : 1\n", "p.yaml:3: limits: has a key that is a list; keys must be plain names"},
		{"merge key", "version: 1\nlimits: &l {cpus: 1}\nsandbox:\n  <<: *l\n", "p.yaml:4: sandbox.<<: merge keys (<<) are not supported; write the fields out"},
		{"null tag with a value", "version: 1\nlimits: {cpus: !!null 5}\n", `p.yaml:2: limits.cpus: want a number, got "5"`},
		{"str tag on a number", "version: 1\nlimits: {pids: !!str 100}\n", `p.yaml:2: limits.pids: want an integer, got "100"`},
		{"version as string", "version: \"1\"\n", `p.yaml:1: version: want an integer, got "1"`},
		{"version missing", "name: x\n", "p.yaml: version: missing; this build reads version: 1"},
		{"version null", "version: ~\n", "p.yaml: version: missing; this build reads version: 1"},
		{"version unsupported", "name: x\nversion: 2\n", "p.yaml:2: version: unsupported version 2; this build reads version: 1"},
		{"empty file", "", "p.yaml: file is empty; it needs at least version: 1"},
		{"only comments", "# nothing\n", "p.yaml: file is empty; it needs at least version: 1"},
		{"null document", "~\n", "p.yaml: file is empty; it needs at least version: 1"},
		{"top-level list", "- version: 1\n", "p.yaml:1: want a mapping (key: value lines), got a list"},
		{"top-level scalar", "hello\n", `p.yaml:1: want a mapping (key: value lines), got "hello"`},
		{"two documents", "version: 1\n---\nlimits: {cpus: 9999}\n", "p.yaml:2: holds more than one YAML document (---); a file holds exactly one"},
		{"trailing empty document", "version: 1\n---\n", "p.yaml:2: holds more than one YAML document (---); a file holds exactly one"},
		{"broken second document", "version: 1\n---\n[\n", "p.yaml: not valid YAML: line 3: did not find expected node content"},
		{"invalid YAML", "version: 1\n\tlimits: {}\n", "p.yaml: not valid YAML: line 2: found a tab character that violates indentation"},
		{"unknown anchor", "version: 1\nname: *x\n", "p.yaml: not valid YAML: unknown anchor 'x' referenced"},

		// Units.
		{"size word", "version: 1\nlimits: {memory: 8 gigs}\n", `p.yaml:2: limits.memory: want a size such as 512MiB or 8GiB, got "8 gigs"`},
		{"size overflow", "version: 1\nlimits: {memory: 99999999TiB}\n", `p.yaml:2: limits.memory: want a size below 16EiB, got "99999999TiB"`},
		{"scratch overflow", "version: 1\nlimits: {scratch: 99999999TiB}\n", `p.yaml:2: limits.scratch: want a size below 16EiB, got "99999999TiB"`},
		{"size negative", "version: 1\nlimits: {memory: -1}\n", `p.yaml:2: limits.memory: want a size such as 512MiB or 8GiB, got "-1"`},
		{"size NaN", "version: 1\nlimits: {memory: .nan}\n", `p.yaml:2: limits.memory: want a size such as 512MiB or 8GiB, got ".nan"`},
		{"size list", "version: 1\nlimits: {memory: [1]}\n", "p.yaml:2: limits.memory: want a size such as 512MiB or 8GiB, got a list"},
		{"duration word", "version: 1\nlimits: {wall_time: forever}\n", `p.yaml:2: limits.wall_time: want a duration such as 30s or 2h, got "forever"`},
		{"duration negative", "version: 1\nlimits: {wall_time: -1h}\n", `p.yaml:2: limits.wall_time: want a duration such as 30s or 2h, got "-1h"`},
		{"duration without unit", "version: 1\nlimits: {stop_grace: 10}\n", `p.yaml:2: limits.stop_grace: want a duration such as 30s or 2h, got "10"`},
		{"duration mapping", "version: 1\nlimits: {wall_time: {h: 1}}\n", "p.yaml:2: limits.wall_time: want a duration such as 30s or 2h, got a mapping"},
		{"gpus negative", "version: 1\nlimits: {gpus: -1}\n", `p.yaml:2: limits.gpus: want all, none, a count or a list of GPU indices such as 0,1; got "-1"`},
		{"gpus word", "version: 1\nlimits: {gpus: some}\n", `p.yaml:2: limits.gpus: want all, none, a count or a list of GPU indices such as 0,1; got "some"`},
		{"gpus duplicate string", "version: 1\nlimits: {gpus: \"0,0\"}\n", `p.yaml:2: limits.gpus: GPU 0 listed twice in "0,0"`},
		{"gpus duplicate list", "version: 1\nlimits: {gpus: [1, 2, 1]}\n", `p.yaml:2: limits.gpus: GPU 1 listed twice in "[1, 2, 1]"`},
		{"gpus negative index", "version: 1\nlimits: {gpus: [0, -2]}\n", `p.yaml:2: limits.gpus: want all, none, a count or a list of GPU indices such as 0,1; got "[0, -2]"`},
		{"gpus trailing comma", "version: 1\nlimits: {gpus: \"1,\"}\n", `p.yaml:2: limits.gpus: want all, none, a count or a list of GPU indices such as 0,1; got "1,"`},
		{"gpus nested list", "version: 1\nlimits: {gpus: [0, [1]]}\n", "p.yaml:2: limits.gpus: want a list of GPU indices such as [0, 1], got a list in the list"},
		{"gpus mapping", "version: 1\nlimits: {gpus: {a: 1}}\n", "p.yaml:2: limits.gpus: want all, none, a count or a list of GPU indices, got a mapping"},
		{"gpus count too large", "version: 1\nlimits: {gpus: 99999999999}\n", "p.yaml:2: limits.gpus: must be all, none, a count up to 64 or indices below 64, got 99999999999"},
		{"gpus index too large", "version: 1\nlimits: {gpus: [0, 64]}\n", "p.yaml:2: limits.gpus: must be all, none, a count up to 64 or indices below 64, got 0,64"},

		// Validate bounds.
		{"cpus too small", "version: 1\nlimits: {cpus: 0.001}\n", "p.yaml:2: limits.cpus: must be between 0.01 and 1024, got 0.001"},
		{"cpus negative", "version: 1\nlimits:\n  cpus: -1\n", "p.yaml:3: limits.cpus: must be between 0.01 and 1024, got -1"},
		{"cpus too large", "version: 1\nlimits: {cpus: 1025}\n", "p.yaml:2: limits.cpus: must be between 0.01 and 1024, got 1025"},
		{"cpus NaN", "version: 1\nlimits: {cpus: .nan}\n", "p.yaml:2: limits.cpus: must be between 0.01 and 1024, got NaN"},
		{"cpus Inf", "version: 1\nlimits: {cpus: .inf}\n", "p.yaml:2: limits.cpus: must be between 0.01 and 1024, got +Inf"},
		{"memory too small", "version: 1\nlimits: {memory: 1MiB, shm: 1MiB}\n", "p.yaml:2: limits.memory: must be between 16MiB and 16TiB, got 1MiB"},
		{"memory too large", "version: 1\nlimits: {memory: 17TiB}\n", "p.yaml:2: limits.memory: must be between 16MiB and 16TiB, got 17TiB"},
		{"pids too small", "version: 1\nlimits: {pids: 15}\n", "p.yaml:2: limits.pids: must be between 16 and 4194304, got 15"},
		{"pids negative", "version: 1\nlimits: {pids: -5}\n", "p.yaml:2: limits.pids: must be between 16 and 4194304, got -5"},
		{"pids too large", "version: 1\nlimits: {pids: 4194305}\n", "p.yaml:2: limits.pids: must be between 16 and 4194304, got 4194305"},
		{"wall_time too short", "version: 1\nlimits: {wall_time: 999ms}\n", "p.yaml:2: limits.wall_time: must be between 1s and 720h, got 999ms"},
		{"wall_time too long", "version: 1\nlimits: {wall_time: 721h}\n", "p.yaml:2: limits.wall_time: must be between 1s and 720h, got 721h0m0s"},
		{"scratch too small", "version: 1\nlimits: {scratch: 1KiB}\n", "p.yaml:2: limits.scratch: must be between 1MiB and 16TiB, got 1KiB"},
		{"scratch too large", "version: 1\nlimits: {scratch: 17TiB}\n", "p.yaml:2: limits.scratch: must be between 1MiB and 16TiB, got 17TiB"},
		{"home too small", "version: 1\nlimits: {home: 1KiB}\n", "p.yaml:2: limits.home: must be between 1MiB and 16TiB, got 1KiB"},
		{"home too large", "version: 1\nlimits: {home: 17TiB}\n", "p.yaml:2: limits.home: must be between 1MiB and 16TiB, got 17TiB"},
		{"shm above memory", "version: 1\nlimits:\n  memory: 1GiB\n  shm: 2GiB\n", "p.yaml:4: limits.shm: must be between 1MiB and limits.memory (1GiB), got 2GiB"},
		{"default shm above memory", "version: 1\nlimits:\n  memory: 512MiB\n", "p.yaml:2: limits.shm: must be between 1MiB and limits.memory (512MiB), got 1GiB"},
		{"shm too small", "version: 1\nlimits: {shm: 1000}\n", "p.yaml:2: limits.shm: must be between 1MiB and limits.memory (8GiB), got 1000"},
		{"cpu_seconds negative", "version: 1\nlimits: {cpu_seconds: -1}\n", "p.yaml:2: limits.cpu_seconds: must be a non-negative number (0: no budget), got -1"},
		{"cpu_seconds Inf", "version: 1\nlimits: {cpu_seconds: .inf}\n", "p.yaml:2: limits.cpu_seconds: must be a non-negative number (0: no budget), got +Inf"},
		{"gpu_seconds NaN", "version: 1\nlimits: {gpu_seconds: .nan}\n", "p.yaml:2: limits.gpu_seconds: must be a non-negative number (0: no budget), got NaN"},
		{"stop_grace too long", "version: 1\nlimits: {stop_grace: 11m}\n", "p.yaml:2: limits.stop_grace: must be at most 10m, got 11m0s"},
		{"rootfs relative", "version: 1\nsandbox: {rootfs: images/x}\n", `p.yaml:2: sandbox.rootfs: must be host or an absolute directory path, got "images/x"`},
		{"python relative", "version: 1\nsandbox: {python: python3}\n", `p.yaml:2: sandbox.python: must be an absolute path to an interpreter, got "python3"`},
		{"output absolute", "version: 1\nsandbox: {output: /etc}\n", `p.yaml:2: sandbox.output: must be a relative path inside the code directory without .., got "/etc"`},
		{"output escapes", "version: 1\nsandbox: {output: out/../../x}\n", `p.yaml:2: sandbox.output: must be a relative path inside the code directory without .., got "out/../../x"`},
		{"mask escapes", "version: 1\nsandbox:\n  mask: [secrets, ../x]\n", `p.yaml:3: sandbox.mask[1]: must be a relative path inside the code directory without .., got "../x"`},
		{"mask absolute", "version: 1\nsandbox:\n  mask:\n  - /etc\n", `p.yaml:4: sandbox.mask[0]: must be a relative path inside the code directory without .., got "/etc"`},
		{"mask empty", "version: 1\nsandbox: {mask: [\"\"]}\n", `p.yaml:2: sandbox.mask[0]: must be a relative path inside the code directory without .., got ""`},
		{"platform", "version: 1\nsandbox: {platform: hvm}\n", `p.yaml:2: sandbox.platform: must be one of systrap, ptrace, kvm, got "hvm"`},
		{"gpu capability", "version: 1\ngpu:\n  capabilities: [compute, display]\n", `p.yaml:3: gpu.capabilities[1]: must be one of compute, utility, graphics, video, got "display"`},
		{"network none with allow", "version: 1\nnetwork:\n  mode: none\n  allow: [pypi.org]\n", "p.yaml:3: network.mode: is none, but network.allow or network.peers is set; use mode: sandbox"},
		{"network mode", "version: 1\nnetwork: {mode: host}\n", `p.yaml:2: network.mode: must be none or sandbox, got "host"`},
		{"network policy", "version: 1\nnetwork: {policy: log}\n", `p.yaml:2: network.policy: must be enforce, block or audit, got "log"`},
		{"network allow empty", "version: 1\nnetwork:\n  allow: [pypi.org, \" \"]\n", "p.yaml:3: network.allow[1]: is empty; want HOST, HOST:PORT, CIDR or CIDR:PORT-PORT"},
		{"vault token_role missing", "version: 1\nvault:\n  policies: [reader]\nsecrets:\n- {path: a/b, env: {X: y}}\n",
			"p.yaml:2: vault.token_role: is required when secrets are listed (the Vault token role that creates orphan job tokens)"},
		{"vault policies missing", "version: 1\nvault:\n  token_role: job\nsecrets:\n- {path: a/b, env: {X: y}}\n",
			"p.yaml:2: vault.policies: is required when secrets are listed"},
		{"vault twice", "version: 1\nlimits: {wall_time: 1h}\n" + secretsOK + "vault:\n  ttl: 2h\n", "p.yaml:9: vault: appears twice"},
		{"vault ttl above wall_time", "version: 1\nlimits: {wall_time: 1h}\nvault: {token_role: job, policies: [r], ttl: 2h}\nsecrets:\n- {path: a/b, env: {X: y}}\n",
			"p.yaml:3: vault.ttl: must be between 1s and limits.wall_time (1h0m0s), got 2h0m0s"},
		{"vault ttl too short", "version: 1\nvault: {token_role: job, policies: [r], ttl: 500ms}\nsecrets:\n- {path: a/b, env: {X: y}}\n",
			"p.yaml:2: vault.ttl: must be between 1s and limits.wall_time (24h0m0s), got 500ms"},
		{"on_renew_failure", "version: 1\nvault: {on_renew_failure: retry}\n", `p.yaml:2: vault.on_renew_failure: must be stop or continue, got "retry"`},
		{"secret path empty", "version: 1\n" + secretsOK + "- env: {X: y}\n", `p.yaml:8: secrets[1].path: must be a Vault path such as database/creds/reader, got ""`},
		{"secret path absolute", "version: 1\n" + secretsOK + "- {path: /secret/x, env: {X: y}}\n", `p.yaml:8: secrets[1].path: must be a Vault path such as database/creds/reader, got "/secret/x"`},
		{"secret maps nothing", "version: 1\n" + secretsOK + "- path: a/b\n", "p.yaml:8: secrets[1]: maps no field; give files: or env:"},
		{"secret file outside /run/secrets", "version: 1\n" + secretsOK + "- path: a/b\n  files:\n    cert: /etc/ssl/cert.pem\n",
			`p.yaml:10: secrets[1].files.cert: must be a path under /run/secrets/, got "/etc/ssl/cert.pem"`},
		{"secret file escapes /run/secrets", "version: 1\n" + secretsOK + "- path: a/b\n  files: {key: /run/secrets/../shadow}\n",
			`p.yaml:9: secrets[1].files.key: must be a path under /run/secrets/, got "/run/secrets/../shadow"`},
		{"secret file relative", "version: 1\n" + secretsOK + "- path: a/b\n  files: {key: run/secrets/k}\n",
			`p.yaml:9: secrets[1].files.key: must be a path under /run/secrets/, got "run/secrets/k"`},
		{"secret env VAULT_TOKEN", "version: 1\n" + secretsOK + "- path: a/b\n  env: {VAULT_TOKEN: token}\n",
			"p.yaml:9: secrets[1].env.VAULT_TOKEN: VAULT_TOKEN may never be passed to a job (launcher credentials, loader injection or unsafe model loading)"},
		{"secret env invalid name", "version: 1\n" + secretsOK + "- path: a/b\n  env: {\"1X\": token}\n",
			`p.yaml:9: secrets[1].env.1X: "1X" is not a valid environment variable name`},
		{"secret env name with space", "version: 1\n" + secretsOK + "- path: a/b\n  env: {\"A B\": token}\n",
			`p.yaml:9: secrets[1].env."A B": "A B" is not a valid environment variable name`},
		{"secret env twice", "version: 1\n" + secretsOK + "- path: a/b\n  env: {DB_PASS: pw}\n",
			"p.yaml:9: secrets[1].env.DB_PASS: sets DB_PASS, as secrets[0].env.DB_PASS does; give each variable once"},
		{"secret env also in env.set", "version: 1\nenv:\n  set: {DB_PASS: x}\n" + secretsOK,
			"p.yaml:9: secrets[0].env.DB_PASS: sets DB_PASS, as env.set.DB_PASS does; give each variable once"},
		{"env.pass and env.set", "version: 1\nenv:\n  pass: [HOME]\n  set: {HOME: /h}\n",
			"p.yaml:4: env.set.HOME: sets HOME, as env.pass[0] does; give each variable once"},
		{"env.pass twice", "version: 1\nenv:\n  pass: [HOME, USER, HOME]\n",
			"p.yaml:3: env.pass[2]: sets HOME, as env.pass[0] does; give each variable once"},
		{"secret file twice", "version: 1\n" + secretsOK + "- path: a/b\n  files: {a: /run/secrets/x, b: /run/secrets/./x}\n",
			"p.yaml:9: secrets[1].files.b: writes /run/secrets/x, as secrets[1].files.a does; give each file once"},
		{"secret file field name", "version: 1\n" + secretsOK + "- path: a/b\n  files: {\"<<\": /run/secrets/x}\n",
			`p.yaml:9: secrets[1].files.<<: names a secret field "<<"; a field name holds letters, digits, '_', '-' and '.'`},
		{"secret env field name", "version: 1\n" + secretsOK + "- path: a/b\n  env: {X: \"\"}\n",
			`p.yaml:9: secrets[1].env.X: names a secret field ""; a field name holds letters, digits, '_', '-' and '.'`},
		{"input kind", "version: 1\ninputs:\n- {kind: weights, path: /d, sha256: " + sha + "}\n", `p.yaml:3: inputs[0].kind: must be dataset, model or code, got "weights"`},
		{"input path relative", "version: 1\ninputs:\n- {path: data, manifest: /m}\n", `p.yaml:3: inputs[0].path: must be an absolute path, got "data"`},
		{"input path missing", "version: 1\ninputs:\n- {name: d, manifest: /m}\n", `p.yaml:3: inputs[0].path: must be an absolute path, got ""`},
		{"input target relative", "version: 1\ninputs:\n- {path: /d, target: data, manifest: /m}\n", `p.yaml:3: inputs[0].target: must be an absolute path inside the sandbox, got "data"`},
		{"input both digests", "version: 1\ninputs:\n- {path: /d, manifest: /m, sha256: " + sha + "}\n", "p.yaml:3: inputs[0]: needs exactly one of sha256 (a file), manifest (a directory) or signature (an OMS model signature)"},
		{"input no digest", "version: 1\ninputs:\n- {path: /d}\n", "p.yaml:3: inputs[0]: needs exactly one of sha256 (a file), manifest (a directory) or signature (an OMS model signature)"},
		{"input sha256 uppercase", "version: 1\ninputs:\n- path: /d\n  sha256: " + strings.ToUpper(sha) + "\n", "p.yaml:4: inputs[0].sha256: must be 64 lowercase hex digits"},
		{"input sha256 short", "version: 1\ninputs:\n- {path: /d, sha256: abc}\n", "p.yaml:3: inputs[0].sha256: must be 64 lowercase hex digits"},
		{"input accept", "version: 1\ninputs:\n- path: /m.pt\n  kind: model\n  sha256: " + sha + "\n  accept:\n  - " + sha + "\n  - nope\n",
			"p.yaml:8: inputs[0].accept[1]: must be 64 lowercase hex digits"},
		{"env.pass VAULT_ADDR", "version: 1\nenv:\n  pass: [HOME, VAULT_ADDR]\n", "p.yaml:3: env.pass[1]: VAULT_ADDR may never be passed to a job (launcher credentials, loader injection or unsafe model loading)"},
		{"env.pass lowercase vault_token", "version: 1\nenv:\n  pass:\n  - vault_token\n", "p.yaml:4: env.pass[0]: vault_token may never be passed to a job (launcher credentials, loader injection or unsafe model loading)"},
		{"env.pass LD_PRELOAD", "version: 1\nenv: {pass: [LD_PRELOAD]}\n", "p.yaml:2: env.pass[0]: LD_PRELOAD may never be passed to a job (launcher credentials, loader injection or unsafe model loading)"},
		{"env.pass invalid", "version: 1\nenv: {pass: [\"A=B\"]}\n", `p.yaml:2: env.pass[0]: "A=B" is not a valid environment variable name`},
		{"env.set torch unsafe load", "version: 1\nenv:\n  set:\n    TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD: \"1\"\n",
			"p.yaml:4: env.set.TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD: TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD may never be passed to a job (launcher credentials, loader injection or unsafe model loading)"},
		{"env.set LD_LIBRARY_PATH", "version: 1\nenv:\n  set: {LD_LIBRARY_PATH: /tmp}\n",
			"p.yaml:3: env.set.LD_LIBRARY_PATH: LD_LIBRARY_PATH may never be passed to a job (launcher credentials, loader injection or unsafe model loading)"},
		{"env.set SECURETRAIN_", "version: 1\nenv:\n  set: {SECURETRAIN_JOB: x}\n",
			"p.yaml:3: env.set.SECURETRAIN_JOB: SECURETRAIN_JOB may never be passed to a job (launcher credentials, loader injection or unsafe model loading)"},
		{"env.set PYTHONSTARTUP", "version: 1\nenv:\n  set: {PYTHONSTARTUP: /x.py}\n",
			"p.yaml:3: env.set.PYTHONSTARTUP: PYTHONSTARTUP may never be passed to a job (launcher credentials, loader injection or unsafe model loading)"},
	}
	seen := map[string]bool{}
	for _, tt := range tests {
		if seen[tt.name] {
			t.Errorf("duplicate case name %q", tt.name)
		}
		seen[tt.name] = true
		t.Run(tt.name, func(t *testing.T) {
			p, err := ParseProfile("p.yaml", []byte(tt.yaml))
			if err == nil {
				t.Fatalf("accepted; want error %q", tt.want)
			}
			if p != nil {
				t.Errorf("returned a profile with the error")
			}
			if got := err.Error(); got != tt.want {
				t.Errorf("error\n got: %s\nwant: %s", got, tt.want)
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Errorf("error %T is not a *FieldError", err)
			}
		})
	}
}

func TestFieldErrorFormat(t *testing.T) {
	for _, tt := range []struct {
		e    FieldError
		want string
	}{
		{FieldError{File: "f.yaml", Line: 3, Field: "limits.cpus", Msg: "bad"}, "f.yaml:3: limits.cpus: bad"},
		{FieldError{File: "f.yaml", Field: "version", Msg: "missing"}, "f.yaml: version: missing"},
		{FieldError{Field: "limits.cpus", Msg: "bad"}, "limits.cpus: bad"},
		{FieldError{File: "f.yaml", Line: 1, Msg: "not valid YAML"}, "f.yaml:1: not valid YAML"},
	} {
		if got := tt.e.Error(); got != tt.want {
			t.Errorf("%+v.Error() = %q, want %q", tt.e, got, tt.want)
		}
	}
}
