//go:build cluster

// Command clusterdemo is the cluster quickstart (bash e2e/demo.sh --cluster): a real etcd and
// kube-apiserver, the Secrets Store CSI Driver's own node plugin installed with its own Helm
// chart, our provider installed with our chart, a pod whose inline volume the kubelet stand-in
// publishes (workload identity with a token the API server issued), `kubectl get secret`
// showing the synced Secret with values masked, then a rotation through the driver. Every phase
// is timed. Ctrl-C stops everything.
//
// It reads the CLUSTER_* variables of e2e/cluster/setup.sh --print-env and AKV_PROVIDER_BIN.
package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"akv-csi-provider/e2e/cluster/stack"
	"akv-csi-provider/e2e/internal/harness"
)

const rotationPoll = 5 * time.Second

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		if errors.Is(ctx.Err(), context.Canceled) {
			fmt.Println("\ninterrupted: stopped the API server, the driver, the provider and the stand-ins")
			os.Exit(130)
		}
		fmt.Fprintln(os.Stderr, "cluster demo failed:", err)
		os.Exit(1)
	}
}

type timer struct{ phases []string }

func (t *timer) phase(name string, f func() error) error {
	start := time.Now()
	fmt.Printf("\n==> %s\n", name)
	err := f()
	d := time.Since(start).Round(time.Millisecond)
	t.phases = append(t.phases, fmt.Sprintf("  %-84s %8s", name, d))
	if err == nil {
		fmt.Printf("    done in %s\n", d)
	}
	return err
}

func run(ctx context.Context) error {
	repo, err := os.Getwd() // demo.sh runs it from the repository's root
	if err != nil {
		return err
	}
	tools, err := stack.ToolsFromEnv(repo)
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "akv-cluster-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	var t timer
	total := time.Now()
	st, err := stack.Start(ctx, stack.Options{Tools: tools, Dir: dir, RotationPollInterval: rotationPoll, RepublishEvery: time.Second, Phase: t.phase})
	if err != nil {
		return err
	}
	defer st.Close()
	fmt.Printf("\n    API server %s (issuer of the pods' tokens), driver %s, provider %s\n", st.CP.URL, filepath.Base(tools.Driver), tools.Provider)

	secrets := st.Azure.Secrets(harness.VaultName)
	ns, sa := harness.Namespace, harness.ServiceAccount
	var pod *corev1.Pod
	err = t.phase("a pod with an inline volume, published by the kubelet stand-in (workload identity)", func() error {
		if _, err := secrets.SetSecret(ctx, "db-password", azsecrets.SetSecretParameters{Value: to.Ptr("first-" + rand.Text()[:12])}, nil); err != nil {
			return err
		}
		c := st.CP.Client.CoreV1()
		if _, err := c.Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			return err
		}
		if _, err := c.ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
			return err
		}
		params := map[string]any{}
		for k, v := range st.Azure.Params(harness.Objects(harness.Object("objectName", "db-password", "objectType", "secret")), map[string]string{"clientID": harness.WIClientID}) {
			params[k] = v
		}
		spc := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "secrets-store.csi.x-k8s.io/v1", "kind": "SecretProviderClass",
			"metadata": map[string]any{"name": "app-secrets", "namespace": ns},
			"spec": map[string]any{"provider": "azure", "parameters": params, "secretObjects": []any{map[string]any{
				"secretName": "app-db", "type": "Opaque", "data": []any{map[string]any{"objectName": "db-password", "key": "password"}},
			}}},
		}}
		if _, err := st.Dynamic.Resource(stack.SPCResource).Namespace(ns).Create(ctx, spc, metav1.CreateOptions{}); err != nil {
			return err
		}
		p, err := c.Pods(ns).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "web-0"},
			Spec: corev1.PodSpec{
				NodeName: st.Kubelet.NodeName(), ServiceAccountName: sa,
				Containers: []corev1.Container{{Name: "app", Image: "example.invalid/app:1"}},
				Volumes: []corev1.Volume{{Name: "secrets-store", VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{
					Driver: stack.DriverName, ReadOnly: to.Ptr(true), VolumeAttributes: map[string]string{"secretProviderClass": "app-secrets"},
				}}}},
			},
		}, metav1.CreateOptions{})
		if err != nil {
			return err
		}
		p.Status.Phase = corev1.PodRunning
		if pod, err = c.Pods(ns).UpdateStatus(ctx, p, metav1.UpdateOptions{}); err != nil {
			return err
		}
		if err := st.Kubelet.Publish(ctx, ns, pod.Name, "secrets-store"); err != nil {
			return err
		}
		return printTree(st.Kubelet.TargetPath(string(pod.UID), "secrets-store"))
	})
	if err != nil {
		return err
	}
	err = t.phase("kubectl get secret app-db (synced by the driver; values masked)", func() error {
		out, err := waitKubectl(ctx, st, 30*time.Second, "-n", ns, "get", "secret", "app-db", "-o", "yaml")
		if err != nil {
			return err
		}
		fmt.Print(indent(maskYAML(out)))
		return nil
	})
	if err != nil {
		return err
	}
	err = t.phase(fmt.Sprintf("rotate: new version of db-password; the driver rotates after %s", rotationPoll), func() error {
		target := filepath.Join(st.Kubelet.TargetPath(string(pod.UID), "secrets-store"), "db-password")
		before, _ := os.ReadFile(target)
		next := "second-" + rand.Text()[:12]
		r, err := secrets.SetSecret(ctx, "db-password", azsecrets.SetSecretParameters{Value: to.Ptr(next)}, nil)
		if err != nil {
			return err
		}
		fmt.Printf("    secret/db-password  new version %s\n", r.ID.Version())
		deadline := time.Now().Add(rotationPoll * 6)
		for time.Now().Before(deadline) {
			now, _ := os.ReadFile(target)
			if string(now) == next {
				fmt.Printf("    file db-password: %s -> %s\n", mask(before), mask(now))
				s, err := st.CP.Client.CoreV1().Secrets(ns).Get(ctx, "app-db", metav1.GetOptions{})
				if err == nil {
					fmt.Printf("    Secret app-db password: %s (resourceVersion %s)\n", mask(s.Data["password"]), s.ResourceVersion)
				}
				return nil
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(250 * time.Millisecond):
			}
		}
		return fmt.Errorf("the file did not rotate within %s", rotationPoll*6)
	})
	if err != nil {
		return err
	}
	fmt.Println("\nphase timings:")
	for _, p := range t.phases {
		fmt.Println(p)
	}
	fmt.Printf("  %-84s %8s\n", "total", time.Since(total).Round(time.Millisecond))
	return nil
}

func waitKubectl(ctx context.Context, st *stack.Stack, limit time.Duration, args ...string) (string, error) {
	deadline := time.Now().Add(limit)
	for {
		out, err := st.Kubectl(args...)
		if err == nil || time.Now().After(deadline) {
			return out, err
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// maskYAML replaces the (base64) values under data: with masks of the decoded values.
var dataLine = regexp.MustCompile(`^(\s+)([A-Za-z0-9._-]+): (\S+)$`)

func maskYAML(y string) string {
	var out []string
	inData := false
	for _, line := range strings.Split(y, "\n") {
		switch {
		case line == "data:":
			inData = true
		case inData && !strings.HasPrefix(line, " "):
			inData = false
		case inData:
			if m := dataLine.FindStringSubmatch(line); m != nil {
				if raw, err := base64.StdEncoding.DecodeString(m[3]); err == nil {
					line = fmt.Sprintf("%s%s: %s", m[1], m[2], mask(raw))
				} else {
					line = fmt.Sprintf("%s%s: %s", m[1], m[2], mask([]byte(m[3])))
				}
			}
		}
		out = append(out, line)
	}
	return strings.Join(out, "\n")
}

func indent(s string) string {
	return "    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ") + "\n"
}

func printTree(target string) error {
	fmt.Printf("    %s/\n", target)
	return filepath.WalkDir(target, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == target {
			return err
		}
		rel, _ := filepath.Rel(target, p)
		pad := strings.Repeat("    ", strings.Count(rel, string(filepath.Separator))+2)
		info, err := os.Lstat(p)
		if err != nil {
			return err
		}
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			dest, _ := os.Readlink(p)
			fmt.Printf("%s%s -> %s\n", pad, d.Name(), dest)
		case d.IsDir():
			fmt.Printf("%s%s/\n", pad, d.Name())
		default:
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			fmt.Printf("%s%s  %s  %s\n", pad, d.Name(), info.Mode().Perm(), mask(data))
		}
		return nil
	})
}

// mask describes a value without showing it.
func mask(data []byte) string {
	sum := sha256.Sum256(data)
	return fmt.Sprintf("******** %d bytes, sha256 %s… (masked)", len(data), hex.EncodeToString(sum[:4]))
}
