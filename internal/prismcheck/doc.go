// Package prismcheck checks that openapi.yaml and the server agree as a validating gateway built
// from the spec sees them: its test (run by `make prism`, part of `make test`) starts the real
// binary and Stoplight Prism as a validating proxy in front of it, and sends through Prism the
// README's examples, the curl command `trackapi serve` prints on its first start, the spec's
// request examples and the test corpus (testdata/events). It fails when Prism finds a request or
// a response the spec does not allow, when Prism refuses a request the server would store, and
// when the README shows an answer the server does not give. Without TRACKAPI_PRISM (the Prism
// executable) the test is skipped, so `go test ./...` does not need Node.js.
package prismcheck
