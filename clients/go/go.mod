// The hand-written helpers over the generated Go client (gen/go): Guard runs a
// func around an LLM call with reserve, settle or release, safe retries, a
// failure policy and usage adapters. Used like gen/go, through replace
// directives (README.md).
module tally.local/guard

go 1.26.0

require (
	connectrpc.com/connect v1.21.1
	google.golang.org/protobuf v1.36.12
	tally.local/gen/go v0.0.0-00010101000000-000000000000
)

require (
	golang.org/x/net v0.57.0 // indirect
	golang.org/x/sys v0.47.0 // indirect
	golang.org/x/text v0.40.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20260706201446-f0a921348800 // indirect
	google.golang.org/grpc v1.84.0 // indirect
)

replace tally.local/gen/go => ../../gen/go
