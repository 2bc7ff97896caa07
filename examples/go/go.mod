// The Go example agent: a module of its own that uses the generated module
// gen/go through a replace directive, as an agent outside this repository would.
module tally.local/examples/go

go 1.26.0

require (
	connectrpc.com/connect v1.21.1
	tally.local/gen/go v0.0.0-00010101000000-000000000000
)

require google.golang.org/protobuf v1.36.12 // indirect

replace tally.local/gen/go => ../../gen/go
