// Package mlog stands in for monis.app/mlog, which the Go module proxy reachable here refuses
// (403). The driver's pkg/secrets-store imports it for mlog.Fatal on its own gRPC server's error
// path; the driver's node plugin main (built by e2e/cluster/setup.sh) also calls Setup, the two
// formats, ValidateAndSetKlogLevelAndFormatGlobally and Error. Everything logs through klog, as
// the original does; the JSON format is accepted but logged as text. See ../../README.md.
package mlog

import (
	"context"
	"fmt"
	"os"

	"k8s.io/klog/v2"
)

// LogFormat is the output format the driver asks for (--log-format-json).
type LogFormat string

const (
	// FormatText is klog's text format.
	FormatText LogFormat = "text"
	// FormatJSON is accepted and logged as text (the stand-in has no JSON encoder).
	FormatJSON LogFormat = "json"
)

// Setup prepares logging and returns the function that flushes it, as the original does.
func Setup() func() {
	return klog.Flush
}

// ValidateAndSetKlogLevelAndFormatGlobally checks the level and format the driver passes.
func ValidateAndSetKlogLevelAndFormatGlobally(_ context.Context, level klog.Level, format LogFormat) error {
	if level < 0 {
		return fmt.Errorf("log level %d is negative", level)
	}
	switch format {
	case FormatText, FormatJSON:
		return nil
	default:
		return fmt.Errorf("log format %q is neither %q nor %q", format, FormatText, FormatJSON)
	}
}

// Error logs msg with key/value pairs (an error among them is logged as such).
func Error(msg string, keysAndValues ...any) {
	var err error
	rest := keysAndValues[:0:0]
	for _, kv := range keysAndValues {
		if e, ok := kv.(error); ok && err == nil {
			err = e
			continue
		}
		rest = append(rest, kv)
	}
	klog.ErrorS(err, msg, rest...)
}

// Fatal logs err and exits, as the original does.
func Fatal(err error, keysAndValues ...any) {
	klog.ErrorS(err, "fatal", keysAndValues...)
	klog.Flush()
	os.Exit(1)
}
