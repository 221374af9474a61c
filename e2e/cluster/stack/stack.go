//go:build cluster

// Package stack brings up the cluster-true environment: a real control plane (package
// controlplane), the Secrets Store CSI Driver installed with its own Helm chart and its node
// plugin binary run as a host process with the chart's service account and the DaemonSet's
// arguments, our provider installed with our chart and run with its DaemonSet's arguments, the
// kubelet stand-in (package kubelet), and the Key Vault and Entra stand-ins of e2e/internal,
// Entra trusting the API server's service account issuer, plus the identity-binding token proxy
// stand-in (e2e/internal/tokenproxy) in front of Entra.
//
// DaemonSets never run here (there is no kubelet or container runtime): a DaemonSet's container
// is run as a host process the way kubelet would start it, with $(VAR) references expanded from
// the container's environment and every path under a volume mount replaced by the volume's
// place on this "host", a sandbox folder (hostPath volumes at <sandbox>/<path>, ConfigMap
// volumes materialised from the API server, and, for a pod whose service account token is
// automounted, the kube-api-access volume: a token of its service account, ca.crt, namespace).
// Our provider's in-cluster API access (TokenReview) is given to the host process as a
// kubeconfig of its chart's ServiceAccount (ProviderAPIAccess).
package stack

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/moby/sys/mountinfo"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"

	"akv-csi-provider/e2e/cluster/controlplane"
	"akv-csi-provider/e2e/cluster/kubelet"
	"akv-csi-provider/e2e/internal/entra"
	"akv-csi-provider/e2e/internal/harness"
	"akv-csi-provider/e2e/internal/tokenproxy"
)

// Names used across the stack.
const (
	NodeName          = "node-1"
	DriverRelease     = "csi-secrets-store"
	DriverNamespace   = "kube-system"
	DriverName        = "secrets-store.csi.k8s.io"
	ProviderRelease   = "akv"
	ProviderNamespace = "kube-system"
	CAConfigMap       = "akv-e2e-ca"
	// RootCAConfigMap is the ConfigMap kube-controller-manager's root-ca publisher writes in
	// every namespace (the cluster CA); our chart mounts it for identity binding.
	RootCAConfigMap = "kube-root-ca.crt"
	// ClusterCAPath is where our chart mounts RootCAConfigMap's ca.crt in the provider's
	// container, or, with token review, where the automounted service account volume holds the
	// same file (the binary's default --token-proxy-ca-file).
	ClusterCAPath = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
)

// The identity-binding (useAzureTokenProxy) workload: a managed identity whose one federated
// credential trusts the API server's issuer for this namespace's service account, with audience
// api://AKSIdentityBinding.
const (
	BindingClientID       = "77777777-8888-4999-aaaa-bbbbbbbbbbbb"
	BindingNamespace      = "orders"
	BindingServiceAccount = "checkout"
)

// GVRs of the driver's CRDs.
var (
	SPCResource   = schema.GroupVersionResource{Group: "secrets-store.csi.x-k8s.io", Version: "v1", Resource: "secretproviderclasses"}
	SPCPSResource = schema.GroupVersionResource{Group: "secrets-store.csi.x-k8s.io", Version: "v1", Resource: "secretproviderclasspodstatuses"}
)

// Tools are the binaries and charts setup.sh built.
type Tools struct {
	Etcd, APIServer, Kubectl, Helm string
	Driver, DriverChart            string
	PromOperatorCRDs               string
	Provider, ProviderChart        string
}

// ToolsFromEnv reads the CLUSTER_* variables run.sh exports and AKV_PROVIDER_BIN.
func ToolsFromEnv(repo string) (Tools, error) {
	t := Tools{
		Etcd:             os.Getenv("CLUSTER_ETCD"),
		APIServer:        filepath.Join(os.Getenv("CLUSTER_KUBERNETES"), "kube-apiserver"),
		Kubectl:          filepath.Join(os.Getenv("CLUSTER_KUBERNETES"), "kubectl"),
		Helm:             os.Getenv("CLUSTER_HELM"),
		Driver:           os.Getenv("CLUSTER_DRIVER"),
		DriverChart:      os.Getenv("CLUSTER_DRIVER_CHART"),
		PromOperatorCRDs: os.Getenv("CLUSTER_PROMOP_CRDS"),
		Provider:         os.Getenv("AKV_PROVIDER_BIN"),
		ProviderChart:    filepath.Join(repo, "deploy", "charts", "akv-csi-provider"),
	}
	var missing []string
	for name, p := range map[string]string{"CLUSTER_ETCD": t.Etcd, "CLUSTER_KUBERNETES": os.Getenv("CLUSTER_KUBERNETES"), "CLUSTER_HELM": t.Helm, "CLUSTER_DRIVER": t.Driver, "CLUSTER_DRIVER_CHART": t.DriverChart, "CLUSTER_PROMOP_CRDS": t.PromOperatorCRDs, "AKV_PROVIDER_BIN": t.Provider} {
		if p == "" {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return t, fmt.Errorf("%s not set: run the cluster tests through e2e/cluster/run.sh", strings.Join(missing, ", "))
	}
	return t, nil
}

// Options for Start.
type Options struct {
	Tools Tools
	// Dir holds everything of the run.
	Dir string
	// RotationPollInterval is the driver chart's rotationPollInterval.
	RotationPollInterval time.Duration
	// RepublishEvery is how often the kubelet stand-in re-publishes volumes.
	RepublishEvery time.Duration
	// Phase, when set, is called around each start-up phase (for timings).
	Phase func(name string, f func() error) error
}

// Stack is the running environment.
type Stack struct {
	Tools    Tools
	Dir      string
	Sandbox  string
	CP       *controlplane.ControlPlane
	Azure    *harness.Env
	Dynamic  dynamic.Interface
	Kubelet  *kubelet.Kubelet
	Driver   *controlplane.Process
	Provider *controlplane.Process
	// DriverMetrics and ProviderMetrics are the /metrics URLs.
	DriverMetrics, ProviderMetrics string
	// ProviderArgs are the arguments the provider runs with (the DaemonSet's, translated, plus
	// --kubeconfig when the chart asks for TokenReview; see ProviderAPIAccess).
	ProviderArgs []string
	// ProviderKubeconfig is the kubeconfig given to the provider for its service account ("" when
	// the rendered args do not ask for TokenReview or the pod would get no token).
	ProviderKubeconfig string
	// ProviderServiceAccount is the DaemonSet's service account (namespace/name).
	ProviderServiceAccount string
	// TokenProxy is the identity-binding token proxy stand-in; TokenProxyURL the URL our
	// chart's identityBinding.tokenProxyURL names it by.
	TokenProxy    *tokenproxy.Proxy
	TokenProxyURL string

	helmHome string
	stop     context.CancelFunc
}

// Start brings the stack up; on error whatever started is stopped.
func Start(ctx context.Context, o Options) (_ *Stack, err error) {
	s := &Stack{Tools: o.Tools, Dir: o.Dir, Sandbox: filepath.Join(o.Dir, "host")}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	phase := o.Phase
	if phase == nil {
		phase = func(_ string, f func() error) error { return f() }
	}
	s.helmHome = filepath.Join(o.Dir, "helm")
	if err := os.MkdirAll(s.Sandbox, 0o755); err != nil {
		return nil, err
	}
	err = phase("Key Vault and Entra stand-ins", func() error {
		dir := filepath.Join(o.Dir, "azure")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		var err error
		s.Azure, err = harness.Start(harness.Options{DeferProvider: true, Dir: dir})
		return err
	})
	if err != nil {
		return nil, err
	}
	err = phase("etcd + kube-apiserver ready", func() error {
		cpDir := filepath.Join(o.Dir, "controlplane")
		if err := os.MkdirAll(cpDir, 0o755); err != nil {
			return err
		}
		var err error
		s.CP, err = controlplane.Start(ctx, controlplane.Options{Etcd: o.Tools.Etcd, APIServer: o.Tools.APIServer, Dir: cpDir})
		if err != nil {
			return err
		}
		s.Dynamic, err = dynamic.NewForConfig(s.CP.Admin)
		return err
	})
	if err != nil {
		return nil, err
	}
	// Entra trusts the cluster's issuer: the workload identity app federates with the API
	// server's service account issuer, whose discovery and JWKS it fetches over HTTPS.
	s.Azure.Tokens.TrustIssuerRoots(s.CP.CA)
	s.Azure.Tokens.AddApp(entra.App{Tenant: harness.Tenant, ClientID: harness.WIClientID, Federated: []entra.FederatedCredential{{
		Issuer: s.CP.URL, Subject: entra.Subject(harness.Namespace, harness.ServiceAccount), Audiences: []string{entra.WorkloadIdentityAudience},
	}}})
	// Identity binding: the same issuer, the token's audience api://AKSIdentityBinding.
	s.Azure.Tokens.AddApp(entra.App{Tenant: harness.Tenant, ClientID: BindingClientID, Federated: []entra.FederatedCredential{{
		Issuer: s.CP.URL, Subject: entra.Subject(BindingNamespace, BindingServiceAccount), Audiences: []string{entra.IdentityBindingAudience},
	}}})
	err = phase("identity-binding token proxy stand-in (certificate from the cluster CA)", s.startTokenProxy)
	if err != nil {
		return nil, err
	}

	driverMetricsPort, err := controlplane.FreePort()
	if err != nil {
		return nil, err
	}
	s.DriverMetrics = fmt.Sprintf("http://127.0.0.1:%d/metrics", driverMetricsPort)
	err = phase("driver: CRDs applied, helm install of its chart", func() error {
		if _, err := s.Kubectl("apply", "-f", filepath.Join(o.Tools.DriverChart, "crds")); err != nil {
			return err
		}
		if _, err := s.Kubectl("wait", "--for=condition=established", "--timeout=60s",
			"crd/secretproviderclasses.secrets-store.csi.x-k8s.io", "crd/secretproviderclasspodstatuses.secrets-store.csi.x-k8s.io"); err != nil {
			return err
		}
		_, err := s.Helm("install", DriverRelease, o.Tools.DriverChart, "--namespace", DriverNamespace,
			"--set", "linux.crds.enabled=false",
			"--set", "syncSecret.enabled=true",
			"--set", "enableSecretRotation=true",
			"--set", "rotationPollInterval="+o.RotationPollInterval.String(),
			"--set", "tokenRequests[0].audience="+entra.WorkloadIdentityAudience,
			"--set", "tokenRequests[1].audience="+entra.IdentityBindingAudience,
			"--set", fmt.Sprintf("linux.metricsAddr=:%d", driverMetricsPort),
			"--set", "logVerbosity=2",
		)
		return err
	})
	if err != nil {
		return nil, err
	}
	err = phase("driver: node plugin started (chart's service account and DaemonSet args)", func() error {
		return s.startDriver(ctx)
	})
	if err != nil {
		return nil, err
	}
	err = phase("provider: helm install of our chart, binary started with the DaemonSet's args", func() error {
		return s.startProvider(ctx)
	})
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	go s.Kubelet.Republish(rctx, o.RepublishEvery)
	return s, nil
}

// Close stops everything that was started.
func (s *Stack) Close() {
	if s.stop != nil {
		s.stop()
	}
	if s.Kubelet != nil {
		if s.Driver != nil && !s.Driver.Exited() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			_ = s.Kubelet.UnpublishAll(ctx)
			cancel()
		}
		s.Kubelet.Close()
	}
	if s.Provider != nil {
		s.Provider.Stop()
	}
	if s.Driver != nil {
		s.Driver.Stop()
	}
	// Whatever the driver left mounted in the sandbox (a failed run) is unmounted, so the run
	// folder can be removed.
	if mounts, err := mountinfo.GetMounts(mountinfo.PrefixFilter(s.Sandbox)); err == nil {
		for _, m := range mounts {
			_ = syscall.Unmount(m.Mountpoint, syscall.MNT_DETACH)
		}
	}
	if s.CP != nil {
		s.CP.Stop()
	}
	if s.TokenProxy != nil {
		s.TokenProxy.Close()
	}
	if s.Azure != nil {
		s.Azure.Close()
	}
}

// HostPath is where a node path lives in the sandbox.
func (s *Stack) HostPath(p string) string { return hostPath(s.Sandbox, p) }

func hostPath(sandbox, p string) string { return filepath.Join(sandbox, filepath.Clean("/"+p)) }

func (s *Stack) startDriver(ctx context.Context) error {
	ds, c, err := s.daemonSetContainer(ctx, DriverNamespace, "app.kubernetes.io/instance="+DriverRelease, "secrets-store")
	if err != nil {
		return err
	}
	args, err := s.HostArgs(ctx, ds, c, s.Sandbox)
	if err != nil {
		return err
	}
	kubeconfig := filepath.Join(s.Dir, "driver.kubeconfig")
	sa := ds.Spec.Template.Spec.ServiceAccountName
	if err := s.CP.ServiceAccountKubeconfig(ctx, ds.Namespace, sa, kubeconfig, 2*time.Hour); err != nil {
		return err
	}
	if s.Driver, err = controlplane.Spawn(s.Dir, "driver", s.Tools.Driver, []string{"KUBECONFIG=" + kubeconfig}, args...); err != nil {
		return err
	}
	sock := endpointPath(args)
	if sock == "" {
		return fmt.Errorf("the driver's DaemonSet args name no unix --endpoint: %q", args)
	}
	if err := waitFile(s.Driver, sock, 60*time.Second); err != nil {
		return err
	}
	kroot := s.HostPath("/var/lib/kubelet")
	for _, v := range ds.Spec.Template.Spec.Volumes {
		if v.Name == "mountpoint-dir" && v.HostPath != nil {
			kroot = filepath.Dir(s.HostPath(v.HostPath.Path))
		}
	}
	if s.Kubelet, err = kubelet.New(s.CP.Client, NodeName, kroot, sock); err != nil {
		return err
	}
	return s.Kubelet.Register(ctx)
}

// startTokenProxy starts the identity-binding token proxy stand-in on loopback. Its certificate
// comes from the cluster CA and names only the server name derived from the cluster id in the
// API server's certificate; it forwards token requests to the Entra stand-in. The provider
// reaches it as https://kubernetes.default.svc.cluster.local:<port> (resolved to 127.0.0.1).
func (s *Stack) startTokenProxy() error {
	name := tokenproxy.ServerNameForCluster(controlplane.ClusterID)
	cert, err := s.CP.ServingCertificate(name)
	if err != nil {
		return err
	}
	if s.TokenProxy, err = tokenproxy.Start(tokenproxy.Options{ServerName: name, Certificate: cert, Upstream: s.Azure.Tokens.Authority, Client: s.Azure.HTTPClient}); err != nil {
		return err
	}
	s.TokenProxyURL = fmt.Sprintf("https://%s:%d", controlplane.APIServerHost, s.TokenProxy.Port)
	return nil
}

// ProviderValues are the values our chart is installed with for the scenarios: the run's CA as
// the CA bundle, the emulated hosts resolved to loopback, free ports, every log detail, and
// identity binding pointed at the token proxy stand-in.
//
// The cluster CA for identity binding goes the way it does in a cluster: startProvider creates
// the kube-root-ca.crt ConfigMap (kube-controller-manager's root-ca publisher would; none runs
// here), the chart mounts it, and HostArgs materialises that volume in the sandbox. The binary
// reads it at its default --token-proxy-ca-file, a path compiled in, which a host process cannot
// have redirected to the sandbox (no mount namespace); so the flag is passed with that same
// container path, which HostArgs then translates to the materialised volume like every other
// mounted path. No --sni-name: the name is computed from the real API server's certificate,
// dialled at kubernetes.default.svc.cluster.local:$KUBERNETES_SERVICE_PORT (see
// StartProviderWith).
func (s *Stack) ProviderValues() (string, error) {
	healthz, err := controlplane.FreePort()
	if err != nil {
		return "", err
	}
	metrics, err := controlplane.FreePort()
	if err != nil {
		return "", err
	}
	path := filepath.Join(s.Dir, "provider-values.yaml")
	v := fmt.Sprintf(`# Written by e2e/cluster/stack: our chart's values for the cluster scenarios.
logVerbosity: 5
metricsAddr: ":%d"
caBundle:
  configMapName: %s
  key: ca.crt
identityBinding:
  tokenProxyURL: %s
linux:
  healthzPort: %d
  extraArgs:
    - --resolve=*.%s=127.0.0.1
    - --resolve=%s=127.0.0.1
    - --resolve=%s=127.0.0.1
    - --token-proxy-ca-file=%s
`, metrics, CAConfigMap, s.TokenProxyURL, healthz, harness.VaultDNSSuffix, harness.AuthorityHost, controlplane.APIServerHost, ClusterCAPath)
	return path, os.WriteFile(path, []byte(v), 0o644)
}

func (s *Stack) startProvider(ctx context.Context) error {
	ca, err := os.ReadFile(s.Azure.CAFile)
	if err != nil {
		return err
	}
	if _, err := s.CP.Client.CoreV1().ConfigMaps(ProviderNamespace).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: CAConfigMap},
		Data:       map[string]string{"ca.crt": string(ca)},
	}, metav1.CreateOptions{}); err != nil {
		return err
	}
	// What the root-ca publisher writes in every namespace: the CA of the API server's
	// serving certificate (and here of the token proxy's).
	clusterCA, err := os.ReadFile(s.CP.CAFile)
	if err != nil {
		return err
	}
	if _, err := s.CP.Client.CoreV1().ConfigMaps(ProviderNamespace).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: RootCAConfigMap},
		Data:       map[string]string{"ca.crt": string(clusterCA)},
	}, metav1.CreateOptions{}); err != nil {
		return err
	}
	values, err := s.ProviderValues()
	if err != nil {
		return err
	}
	if _, err := s.Helm("install", ProviderRelease, s.Tools.ProviderChart, "--namespace", ProviderNamespace, "-f", values); err != nil {
		return err
	}
	ds, c, err := s.daemonSetContainer(ctx, ProviderNamespace, "app.kubernetes.io/instance="+ProviderRelease, "provider")
	if err != nil {
		return err
	}
	if s.ProviderArgs, err = s.HostArgs(ctx, ds, c, s.Sandbox); err != nil {
		return err
	}
	s.ProviderServiceAccount = ds.Namespace + "/" + serviceAccountName(ds)
	if s.ProviderArgs, s.ProviderKubeconfig, err = s.ProviderAPIAccess(ctx, ds, s.ProviderArgs, filepath.Join(s.Dir, "provider.kubeconfig")); err != nil {
		return err
	}
	for _, a := range s.ProviderArgs {
		if p, ok := strings.CutPrefix(a, "--prometheus-port="); ok {
			s.ProviderMetrics = "http://127.0.0.1:" + p + "/metrics"
		}
	}
	s.Provider, err = s.StartProviderWith("provider", s.ProviderArgs)
	return err
}

// ProviderAPIAccess gives a provider host process what its DaemonSet pod would have to reach the
// API server. With --token-review=auto the binary uses --kubeconfig if given, else the
// in-cluster config (the pod's mounted service account token, KUBERNETES_SERVICE_HOST); a host
// process has no such files, so when the rendered args contain --token-review=auto and kubelet
// would mount the token (automountServiceAccountToken of the pod spec, else of the
// ServiceAccount, else true), a TokenRequest token of the DaemonSet's own service account is
// written into a kubeconfig at path (server: the API server, CA: the cluster CA) and
// --kubeconfig=path is appended. So the reviews are authorised by exactly the RBAC the chart
// grants that service account, nothing more. Otherwise args come back unchanged (and the
// binary, finding no config, reviews nothing). It returns the args and the kubeconfig's path
// ("" when none was written).
func (s *Stack) ProviderAPIAccess(ctx context.Context, ds *appsv1.DaemonSet, args []string, path string) ([]string, string, error) {
	if !slices.Contains(args, "--token-review=auto") || slices.ContainsFunc(args, func(a string) bool { return strings.HasPrefix(a, "--kubeconfig=") }) {
		return args, "", nil
	}
	automount, err := s.automountsToken(ctx, ds)
	if err != nil {
		return nil, "", fmt.Errorf("the chart renders --token-review=auto: %w", err)
	}
	if !automount {
		// No token in the pod: no in-cluster config, so no reviews (the tests say so).
		return args, "", nil
	}
	if err := s.CP.ServiceAccountKubeconfig(ctx, ds.Namespace, serviceAccountName(ds), path, 2*time.Hour); err != nil {
		return nil, "", fmt.Errorf("the chart renders --token-review=auto: %w", err)
	}
	return append(slices.Clone(args), "--kubeconfig="+path), path, nil
}

// serviceAccountName is the pod's service account as kubelet resolves it.
func serviceAccountName(ds *appsv1.DaemonSet) string {
	if sa := ds.Spec.Template.Spec.ServiceAccountName; sa != "" {
		return sa
	}
	return "default"
}

// StartProviderWith runs our binary with args and waits for its socket. Its environment has
// KUBERNETES_SERVICE_PORT, which kubelet gives every container (the kubernetes Service's port):
// here, with no kube-proxy and the Service's name resolved to 127.0.0.1, the API server's own.
func (s *Stack) StartProviderWith(name string, args []string) (*controlplane.Process, error) {
	env := []string{"NO_COLOR=1", fmt.Sprintf("KUBERNETES_SERVICE_PORT=%d", s.CP.Port)}
	p, err := controlplane.Spawn(s.Dir, name, s.Tools.Provider, env, args...)
	if err != nil {
		return nil, err
	}
	sock := endpointPath(args)
	if sock == "" {
		p.Stop()
		return nil, fmt.Errorf("the provider's args name no unix --endpoint: %q", args)
	}
	if err := waitFile(p, sock, 30*time.Second); err != nil {
		p.Stop()
		return nil, err
	}
	return p, nil
}

// DaemonSetContainer finds the DaemonSet selected by label in namespace and its container.
func (s *Stack) DaemonSetContainer(ctx context.Context, namespace, selector, container string) (*appsv1.DaemonSet, corev1.Container, error) {
	return s.daemonSetContainer(ctx, namespace, selector, container)
}

func (s *Stack) daemonSetContainer(ctx context.Context, namespace, selector, container string) (*appsv1.DaemonSet, corev1.Container, error) {
	list, err := s.CP.Client.AppsV1().DaemonSets(namespace).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return nil, corev1.Container{}, err
	}
	if len(list.Items) != 1 {
		return nil, corev1.Container{}, fmt.Errorf("%d DaemonSets in %s match %s, want 1", len(list.Items), namespace, selector)
	}
	ds := &list.Items[0]
	for _, c := range ds.Spec.Template.Spec.Containers {
		if c.Name == container {
			return ds, c, nil
		}
	}
	return nil, corev1.Container{}, fmt.Errorf("DaemonSet %s/%s has no container %q", namespace, ds.Name, container)
}

// HostArgs returns the container's command-line arguments as they would run on this node:
// $(VAR) expanded from the container's env (values and the spec.nodeName field), and each path
// under a volume mount replaced by that volume's folder in sandbox (the node's "/").
func (s *Stack) HostArgs(ctx context.Context, ds *appsv1.DaemonSet, c corev1.Container, sandbox string) ([]string, error) {
	spec := ds.Spec.Template.Spec
	env := map[string]string{}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = expand(e.Value, env)
		case e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName":
			env[e.Name] = NodeName
		}
	}
	type mount struct{ container, host string }
	var mounts []mount
	// What the ServiceAccount admission plugin adds to a pod whose service account token is
	// automounted, unless a container already mounts that path: the projected
	// kube-api-access volume (token, ca.crt, namespace), which kubelet fills.
	if !slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return filepath.Clean(m.MountPath) == ServiceAccountDir }) {
		automount, err := s.automountsToken(ctx, ds)
		if err != nil {
			return nil, err
		}
		if automount {
			host, err := s.materialiseServiceAccountVolume(ctx, sandbox, ds)
			if err != nil {
				return nil, err
			}
			mounts = append(mounts, mount{container: ServiceAccountDir, host: host})
		}
	}
	for _, m := range c.VolumeMounts {
		i := slices.IndexFunc(spec.Volumes, func(v corev1.Volume) bool { return v.Name == m.Name })
		if i < 0 {
			return nil, fmt.Errorf("container %s mounts volume %q, which the pod does not define", c.Name, m.Name)
		}
		v := spec.Volumes[i]
		var host string
		switch {
		case v.HostPath != nil:
			host = hostPath(sandbox, v.HostPath.Path)
			if err := os.MkdirAll(host, 0o755); err != nil {
				return nil, err
			}
		case v.ConfigMap != nil:
			var err error
			if host, err = s.materialiseConfigMap(ctx, sandbox, ds.Namespace, ds.Name, v); err != nil {
				return nil, err
			}
		default:
			host = filepath.Join(sandbox, "var/lib/kubelet/pods", ds.Namespace+"_"+ds.Name, "volumes", v.Name)
			if err := os.MkdirAll(host, 0o755); err != nil {
				return nil, err
			}
		}
		if m.SubPath != "" {
			host = filepath.Join(host, m.SubPath)
		}
		mounts = append(mounts, mount{container: filepath.Clean(m.MountPath), host: host})
	}
	// Longest mount path first, so /a/b wins over /a.
	sort.Slice(mounts, func(i, j int) bool { return len(mounts[i].container) > len(mounts[j].container) })
	translate := func(p string) string {
		for _, m := range mounts {
			if p == m.container || strings.HasPrefix(p, m.container+"/") {
				return m.host + strings.TrimPrefix(p, m.container)
			}
		}
		return p
	}
	var out []string
	for _, a := range c.Args {
		a = expand(a, env)
		flag, value, ok := strings.Cut(a, "=")
		if !ok || !strings.HasPrefix(flag, "-") {
			out = append(out, a)
			continue
		}
		parts := strings.Split(value, ",")
		for i, p := range parts {
			if rest, ok := strings.CutPrefix(p, "unix://"); ok {
				parts[i] = "unix://" + translate(rest)
			} else if strings.HasPrefix(p, "/") {
				parts[i] = translate(p)
			}
		}
		out = append(out, flag+"="+strings.Join(parts, ","))
	}
	return out, nil
}

// ServiceAccountDir is where kubelet mounts a pod's automounted service account volume.
const ServiceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// automountsToken reports whether the DaemonSet's pods get their service account token
// automounted: the pod spec's automountServiceAccountToken, else the ServiceAccount's, else true.
func (s *Stack) automountsToken(ctx context.Context, ds *appsv1.DaemonSet) (bool, error) {
	if a := ds.Spec.Template.Spec.AutomountServiceAccountToken; a != nil {
		return *a, nil
	}
	sa := serviceAccountName(ds)
	obj, err := s.CP.Client.CoreV1().ServiceAccounts(ds.Namespace).Get(ctx, sa, metav1.GetOptions{})
	if err != nil {
		return false, fmt.Errorf("the pod's service account %s/%s: %w", ds.Namespace, sa, err)
	}
	return obj.AutomountServiceAccountToken == nil || *obj.AutomountServiceAccountToken, nil
}

// materialiseServiceAccountVolume writes the kube-api-access projected volume kubelet fills for
// the pod: a TokenRequest token of its service account (audience: the API server), ca.crt from
// the namespace's kube-root-ca.crt ConfigMap (the cluster CA until the stack creates it) and the
// namespace.
func (s *Stack) materialiseServiceAccountVolume(ctx context.Context, sandbox string, ds *appsv1.DaemonSet) (string, error) {
	dir := filepath.Join(sandbox, "var/lib/kubelet/pods", ds.Namespace+"_"+ds.Name, "volumes/kubernetes.io~projected/kube-api-access")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	tok, err := s.CP.ServiceAccountToken(ctx, ds.Namespace, serviceAccountName(ds), time.Hour)
	if err != nil {
		return "", fmt.Errorf("the pod's automounted service account token: %w", err)
	}
	var ca []byte
	cm, err := s.CP.Client.CoreV1().ConfigMaps(ds.Namespace).Get(ctx, RootCAConfigMap, metav1.GetOptions{})
	switch {
	case err == nil:
		ca = []byte(cm.Data["ca.crt"])
	case apierrors.IsNotFound(err):
		if ca, err = os.ReadFile(s.CP.CAFile); err != nil {
			return "", err
		}
	default:
		return "", err
	}
	for name, data := range map[string][]byte{"token": []byte(tok), "ca.crt": ca, "namespace": []byte(ds.Namespace)} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			return "", err
		}
	}
	return dir, nil
}

// materialiseConfigMap writes a ConfigMap volume's items into a folder, as kubelet does.
func (s *Stack) materialiseConfigMap(ctx context.Context, sandbox, namespace, owner string, v corev1.Volume) (string, error) {
	dir := filepath.Join(sandbox, "var/lib/kubelet/pods", namespace+"_"+owner, "volumes/kubernetes.io~configmap", v.Name)
	cm, err := s.CP.Client.CoreV1().ConfigMaps(namespace).Get(ctx, v.ConfigMap.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) && v.ConfigMap.Optional != nil && *v.ConfigMap.Optional {
		// kubelet mounts an empty volume for a missing optional ConfigMap.
		return dir, os.MkdirAll(dir, 0o755)
	}
	if err != nil {
		return "", fmt.Errorf("ConfigMap volume %q: %w", v.Name, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	items := v.ConfigMap.Items
	if len(items) == 0 {
		for k := range cm.Data {
			items = append(items, corev1.KeyToPath{Key: k, Path: k})
		}
	}
	for _, it := range items {
		data, ok := cm.Data[it.Key]
		if !ok {
			return "", fmt.Errorf("ConfigMap %s/%s has no key %q", namespace, cm.Name, it.Key)
		}
		p := filepath.Join(dir, it.Path)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return "", err
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			return "", err
		}
	}
	return dir, nil
}

// expand replaces $(NAME) with env[NAME] as kubelet does; unknown references stay, $$ is $.
func expand(s string, env map[string]string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '$' && i+1 < len(s) {
			if s[i+1] == '$' {
				b.WriteByte('$')
				i++
				continue
			}
			if s[i+1] == '(' {
				if end := strings.IndexByte(s[i+2:], ')'); end >= 0 {
					name := s[i+2 : i+2+end]
					if v, ok := env[name]; ok {
						b.WriteString(v)
						i += 2 + end
						continue
					}
				}
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func endpointPath(args []string) string {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--endpoint="); ok {
			if p, ok := strings.CutPrefix(v, "unix://"); ok {
				return p
			}
		}
	}
	return ""
}

func waitFile(p *controlplane.Process, path string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		if p.Exited() {
			return fmt.Errorf("%s exited before creating %s; its log ends with:\n%s", filepath.Base(p.Log()), path, controlplane.Tail(p.Log(), 30))
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s did not create %s within %s; its log ends with:\n%s", filepath.Base(p.Log()), path, limit, controlplane.Tail(p.Log(), 30))
}

// Kubectl runs kubectl as the admin.
func (s *Stack) Kubectl(args ...string) (string, error) {
	return s.run(s.Tools.Kubectl, append([]string{"--kubeconfig", s.CP.AdminKubeconfig}, args...)...)
}

// Helm runs helm against the API server as the admin.
func (s *Stack) Helm(args ...string) (string, error) {
	return s.run(s.Tools.Helm, args...)
}

func (s *Stack) run(bin string, args ...string) (string, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(),
		"KUBECONFIG="+s.CP.AdminKubeconfig,
		"HELM_CACHE_HOME="+filepath.Join(s.helmHome, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(s.helmHome, "config"),
		"HELM_DATA_HOME="+filepath.Join(s.helmHome, "data"),
	)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		return out.String(), fmt.Errorf("%s %s: %w\n%s", filepath.Base(bin), strings.Join(args, " "), err, out.String())
	}
	return out.String(), nil
}

// Metrics fetches a Prometheus text page.
func Metrics(url string) (string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	if _, err := b.ReadFrom(resp.Body); err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", errors.New(resp.Status)
	}
	return b.String(), nil
}
