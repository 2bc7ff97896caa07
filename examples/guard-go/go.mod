// The Go guard example: requires clients/go (and the generated gen/go)
// through replace directives, as an agent's module would.
module tally.local/guardexample

go 1.26.0

require tally.local/guard v0.0.0-00010101000000-000000000000

require (
	connectrpc.com/connect v1.21.1 // indirect
	golang.org/x/net v0.57.0 // indirect
	golang.org/x/sys v0.47.0 // indirect
	golang.org/x/text v0.40.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20260706201446-f0a921348800 // indirect
	google.golang.org/grpc v1.84.0 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
	tally.local/gen/go v0.0.0-00010101000000-000000000000 // indirect
)

replace tally.local/gen/go => ../../gen/go

replace tally.local/guard => ../../clients/go
