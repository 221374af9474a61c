//go:build cluster

// Package cluster holds the cluster-true end-to-end scenarios: a real kube-apiserver and etcd,
// the Secrets Store CSI Driver's own node plugin installed through its own Helm chart, our
// provider installed through our chart and run with its DaemonSet's arguments, a kubelet
// stand-in that publishes pods' inline volumes the way kubelet does, and the Key Vault and
// Entra stand-ins. Run through e2e/cluster/run.sh (build tag "cluster").
package cluster

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"akv-csi-provider/e2e/cluster/controlplane"
	"akv-csi-provider/e2e/cluster/stack"
	"akv-csi-provider/e2e/internal/harness"
)

// rotationPoll is the driver's --rotation-poll-interval (its chart's rotationPollInterval).
const rotationPoll = 5 * time.Second

var (
	st      *stack.Stack
	timings []string
)

// phase runs f and records its duration for the summary.
func phase(name string, f func() error) error {
	start := time.Now()
	fmt.Printf("=== cluster: %s\n", name)
	err := f()
	timings = append(timings, fmt.Sprintf("  %-80s %7s", name, time.Since(start).Round(10*time.Millisecond)))
	return err
}

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	repo, _ := filepath.Abs("../..")
	tools, err := stack.ToolsFromEnv(repo)
	if err != nil {
		fmt.Fprintln(os.Stderr, "cluster e2e:", err)
		return 2
	}
	dir, err := os.MkdirTemp("", "akv-cluster-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	keep := os.Getenv("CLUSTER_KEEP") != ""
	start := time.Now()
	st, err = stack.Start(context.Background(), stack.Options{
		Tools:                tools,
		Dir:                  dir,
		RotationPollInterval: rotationPoll,
		RepublishEvery:       time.Second,
		Phase:                phase,
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "cluster e2e: start-up failed: %v\n(logs in %s)\n", err, dir)
		return 1
	}
	fmt.Printf("=== cluster: up in %s (API server %s, driver metrics %s, run folder %s)\n", time.Since(start).Round(10*time.Millisecond), st.CP.URL, st.DriverMetrics, dir)
	code := m.Run()
	if leaks := providerLeaks(); leaks != "" {
		fmt.Fprintln(os.Stderr, "cluster e2e: "+leaks)
		code = 1
	}
	st.Close()
	fmt.Println("\n=== cluster phase timings")
	for _, t := range timings {
		fmt.Println(t)
	}
	if code != 0 || keep {
		fmt.Printf("=== cluster: logs kept in %s (driver.log, provider.log, controlplane/*.log)\n", dir)
		if code != 0 {
			for _, name := range []string{"driver.log", "provider.log"} {
				fmt.Printf("--- last lines of %s\n%s\n", name, controlplane.Tail(filepath.Join(dir, name), 40))
			}
		}
	} else {
		_ = os.RemoveAll(dir)
	}
	return code
}

// providerLeaks scans the provider's log for the secrets the scenarios handled: stored values,
// the service principal's secret, and every token the API server or Entra issued. It returns a
// description of what leaked, or "".
// Every provider process of the run is scanned: provider.log, and the providers the TokenReview
// scenarios start (provider-*.log).
func providerLeaks() string {
	files, _ := filepath.Glob(filepath.Join(st.Dir, "provider-*.log"))
	files = append([]string{filepath.Join(st.Dir, "provider.log")}, files...)
	secrets := append([]string{harness.SPClientSecret}, st.Azure.Tokens.Issued()...)
	secrets = append(secrets, issuedTokens()...)
	secrets = append(secrets, reviewTokens()...)
	secrets = append(secrets, storedValues...)
	for _, f := range files {
		logs, err := os.ReadFile(f)
		if err != nil {
			return "reading " + filepath.Base(f) + ": " + err.Error()
		}
		for _, s := range secrets {
			if len(s) >= 8 && strings.Contains(string(logs), s) {
				return fmt.Sprintf("a secret value, client secret or token (%d characters) appears in %s", len(s), filepath.Base(f))
			}
		}
	}
	return ""
}
