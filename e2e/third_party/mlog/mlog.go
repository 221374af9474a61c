// Package mlog stands in for monis.app/mlog, which the Go module proxy reachable here refuses
// (403). The driver's pkg/secrets-store imports it for one call, mlog.Fatal, on its own gRPC
// server's error path, which the e2e tests never run. See ../../README.md.
package mlog

import (
	"fmt"
	"os"
)

// Fatal prints err and exits, as the original does.
func Fatal(err error, keysAndValues ...any) {
	fmt.Fprintln(os.Stderr, append([]any{"fatal:", err}, keysAndValues...)...)
	os.Exit(1)
}
