//go:build cluster

package cluster

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"akv-csi-provider/e2e/cluster/controlplane"
)

var promCRDsOnce sync.Once

// applyPromOperatorCRDs applies the Prometheus Operator's CRDs (server-side: they are too big
// for the last-applied annotation), so ServiceMonitor and PodMonitor objects install.
func applyPromOperatorCRDs(t *testing.T) {
	t.Helper()
	var err error
	promCRDsOnce.Do(func() {
		if _, err = st.Kubectl("apply", "--server-side", "-f", st.Tools.PromOperatorCRDs); err != nil {
			return
		}
		// kubectl wait fails while a new CRD has no status conditions yet: poll.
		deadline := time.Now().Add(60 * time.Second)
		for {
			_, err = st.Kubectl("wait", "--for=condition=established", "--timeout=10s", "crd/servicemonitors.monitoring.coreos.com", "crd/podmonitors.monitoring.coreos.com")
			if err == nil || time.Now().After(deadline) {
				return
			}
			time.Sleep(500 * time.Millisecond)
		}
	})
	if err != nil {
		t.Fatalf("applying the Prometheus Operator CRDs: %v", err)
	}
}

// chartPorts overrides only the ports of a values file, so providers started from several
// releases do not collide with each other or with the machine's other listeners.
func chartPorts(t *testing.T) []string {
	t.Helper()
	h, err := controlplane.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	m, err := controlplane.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return []string{"--set", fmt.Sprintf("linux.healthzPort=%d", h), "--set", fmt.Sprintf("metricsAddr=:%d", m)}
}

// runRenderedArgs takes the DaemonSet our chart rendered in the API server and runs our binary
// with its container's args (paths moved into a sandbox of its own), showing the binary accepts
// every flag the chart writes. It returns the args.
func runRenderedArgs(t *testing.T, ns, release string) []string {
	t.Helper()
	ds, c, err := st.DaemonSetContainer(ctx(t), ns, "app.kubernetes.io/instance="+release, "provider")
	if err != nil {
		t.Fatal(err)
	}
	// A node folder of its own (short: a unix socket path has at most 107 bytes).
	sandbox, err := os.MkdirTemp("", "akvc-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(sandbox) })
	args, err := st.HostArgs(ctx(t), ds, c, sandbox)
	if err != nil {
		t.Fatal(err)
	}
	p, err := st.StartProviderWith("chart-"+ns+"-"+release, args)
	if err != nil {
		t.Fatalf("our binary refused the args our chart rendered (%s):\n%q\n%v", ns, args, err)
	}
	p.Stop()
	return args
}

// Every values file of deploy/charts/akv-csi-provider/ci/ installs against the API server; the
// DaemonSet's args run; the metrics values create their Service, ServiceMonitor and PodMonitor.
func TestChartInstallsEveryCIValuesFile(t *testing.T) {
	applyPromOperatorCRDs(t)
	files, err := filepath.Glob(filepath.Join(st.Tools.ProviderChart, "ci", "*-values.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no ci/*-values.yaml in %s (%v)", st.Tools.ProviderChart, err)
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), "-values.yaml")
		t.Run(name, func(t *testing.T) {
			ns := "chart-" + name
			ensureNamespace(t, ns)
			// ConfigMaps a values file names as CA bundle, with the run's CA in them.
			ca, err := os.ReadFile(st.Azure.CAFile)
			if err != nil {
				t.Fatal(err)
			}
			for _, cm := range []struct{ name, key string }{{"corporate-ca", "ca-bundle.pem"}} {
				if _, err := st.CP.Client.CoreV1().ConfigMaps(ns).Create(ctx(t), &corev1.ConfigMap{
					ObjectMeta: metav1.ObjectMeta{Name: cm.name}, Data: map[string]string{cm.key: string(ca)},
				}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
					t.Fatal(err)
				}
			}
			if strings.Contains(readFile(t, f), "serviceAccountName: akv-provider") {
				ensureNamespace(t, ns, "akv-provider")
			}
			args := append([]string{"install", "akv", st.Tools.ProviderChart, "--namespace", ns, "-f", f}, chartPorts(t)...)
			if _, err := st.Helm(args...); err != nil {
				t.Fatal(err)
			}
			dss, err := st.CP.Client.AppsV1().DaemonSets(ns).List(ctx(t), metav1.ListOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if name == "disabled" {
				if len(dss.Items) != 0 {
					t.Errorf("linux.enabled=false installed %d DaemonSets", len(dss.Items))
				}
				return
			}
			if len(dss.Items) != 1 {
				t.Fatalf("%d DaemonSets installed, want 1", len(dss.Items))
			}
			runRenderedArgs(t, ns, "akv")
			if name == "metrics" {
				for _, gvr := range []schema.GroupVersionResource{
					{Group: "monitoring.coreos.com", Version: "v1", Resource: "servicemonitors"},
					{Group: "monitoring.coreos.com", Version: "v1", Resource: "podmonitors"},
				} {
					list, err := st.Dynamic.Resource(gvr).Namespace(ns).List(ctx(t), metav1.ListOptions{})
					if err != nil || len(list.Items) != 1 {
						t.Errorf("%s in %s: %v (err %v)", gvr.Resource, ns, len(list.Items), err)
					}
				}
				svcs, err := st.CP.Client.CoreV1().Services(ns).List(ctx(t), metav1.ListOptions{})
				if err != nil || len(svcs.Items) != 1 {
					t.Errorf("metrics Service in %s: %v", ns, err)
				}
			}
		})
	}
}

// helm upgrade changes the DaemonSet's args and our binary runs with the new ones; a value the
// schema forbids is refused before anything changes; helm uninstall removes what it installed.
func TestChartUpgradeRefusalUninstall(t *testing.T) {
	ns := "chart-lifecycle"
	ensureNamespace(t, ns)
	ports := chartPorts(t)
	if _, err := st.Helm(append([]string{"install", "akv", st.Tools.ProviderChart, "--namespace", ns}, ports...)...); err != nil {
		t.Fatal(err)
	}
	before := runRenderedArgs(t, ns, "akv")
	if !slices.Contains(before, "--max-retries=4") {
		t.Fatalf("default install lacks --max-retries=4: %q", before)
	}
	tuning := filepath.Join(st.Tools.ProviderChart, "ci", "tuning-values.yaml")
	if _, err := st.Helm(append([]string{"upgrade", "akv", st.Tools.ProviderChart, "--namespace", ns, "-f", tuning}, ports...)...); err != nil {
		t.Fatal(err)
	}
	after := runRenderedArgs(t, ns, "akv")
	if !slices.Contains(after, "--max-retries=0") || !slices.Contains(after, "--max-call-recv-msg-size=8388608") {
		t.Errorf("the upgraded DaemonSet does not carry tuning-values' flags: %q", after)
	}
	out, err := st.Helm("upgrade", "akv", st.Tools.ProviderChart, "--namespace", ns, "--set", "maxRetries=-1")
	if err == nil {
		t.Errorf("helm upgrade with maxRetries=-1 (schema minimum 0) succeeded:\n%s", out)
	} else if !strings.Contains(out, "schema") || !strings.Contains(out, "maxRetries") {
		t.Errorf("helm's refusal does not name the schema and maxRetries:\n%s", out)
	}
	hist, err := st.Helm("history", "akv", "--namespace", ns, "--max", "10")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(strings.TrimSpace(hist), "\n") != 2 {
		t.Errorf("the refused upgrade left a revision:\n%s", hist)
	}
	if _, err := st.Helm("uninstall", "akv", "--namespace", ns, "--wait"); err != nil {
		t.Fatal(err)
	}
	dss, err := st.CP.Client.AppsV1().DaemonSets(ns).List(ctx(t), metav1.ListOptions{})
	if err != nil || len(dss.Items) != 0 {
		t.Errorf("DaemonSets left after uninstall: %d (err %v)", len(dss.Items), err)
	}
	sas, err := st.CP.Client.CoreV1().ServiceAccounts(ns).List(ctx(t), metav1.ListOptions{LabelSelector: "app.kubernetes.io/instance=akv"})
	if err != nil || len(sas.Items) != 0 {
		t.Errorf("ServiceAccounts left after uninstall: %d (err %v)", len(sas.Items), err)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
