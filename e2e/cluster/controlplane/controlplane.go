//go:build cluster

// Package controlplane runs a real Kubernetes control plane on loopback: etcd and
// kube-apiserver (built from k8s.io/kubernetes by e2e/cluster/setup.sh), with a CA made per run,
// client-certificate admin access, RBAC, a service account signing key, TokenRequest and the
// service account issuer's OIDC discovery and JWKS served anonymously over HTTPS. There is no
// kubelet, scheduler or controller-manager: the tests play kubelet themselves (package kubelet).
package controlplane

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"akv-csi-provider/e2e/internal/tokenproxy"
)

// ClusterID is the fixed cluster id of the test cluster. The API server's serving certificate
// carries it in the SAN hcp-kubernetes.<ClusterID>.svc.cluster.local, as an AKS cluster's does;
// the identity-binding token proxy's server name is derived from it.
const ClusterID = "65f0c1a5e2e0b1d1a9c0ffee"

// APIServerHost is the API server's in-cluster name, which its serving certificate also names.
const APIServerHost = "kubernetes.default.svc.cluster.local"

// Options for Start.
type Options struct {
	// Etcd and APIServer are the binaries.
	Etcd, APIServer string
	// Dir holds certificates, data and logs.
	Dir string
}

// ControlPlane is a running etcd + kube-apiserver.
type ControlPlane struct {
	// URL is the API server's address, https://127.0.0.1:<port>; it is also the service
	// account issuer.
	URL string
	// Port is the API server's port on 127.0.0.1.
	Port int
	// CAFile is the PEM of the CA that signed the serving certificate and the admin's.
	CAFile string
	// CA is CAFile as a pool.
	CA *x509.CertPool
	// AdminKubeconfig is a kubeconfig file for system:masters.
	AdminKubeconfig string
	// SAKeyFile is the PEM (PKCS#1) of the service account signing key the API server signs
	// and verifies its tokens with (--service-account-signing-key-file / -key-file).
	SAKeyFile string
	// Admin is a client-go config for system:masters; Client its clientset.
	Admin  *rest.Config
	Client kubernetes.Interface

	dir   string
	procs []*Process
	ca    *authority

	mu     sync.Mutex
	tokens []string
}

// Process is a child process with its log file.
type Process struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	log  string
}

// Start starts etcd and kube-apiserver and waits until the API server is ready and the
// issuer's discovery is readable without credentials. On error whatever started is stopped.
func Start(ctx context.Context, o Options) (_ *ControlPlane, err error) {
	cp := &ControlPlane{dir: o.Dir}
	defer func() {
		if err != nil {
			cp.Stop()
		}
	}()
	pki := filepath.Join(o.Dir, "pki")
	if err := os.MkdirAll(pki, 0o700); err != nil {
		return nil, err
	}
	apiPort, err := freePort()
	if err != nil {
		return nil, err
	}
	cp.URL = fmt.Sprintf("https://127.0.0.1:%d", apiPort)
	cp.Port = apiPort
	ca, err := newCA()
	if err != nil {
		return nil, err
	}
	cp.ca = ca
	cp.CAFile = filepath.Join(pki, "ca.crt")
	if err := writePEM(cp.CAFile, "CERTIFICATE", ca.cert.Raw); err != nil {
		return nil, err
	}
	cp.CA = x509.NewCertPool()
	cp.CA.AddCert(ca.cert)
	// The in-cluster names, and the SAN that carries the cluster id on AKS (identity binding
	// reads it to derive the token proxy's server name).
	serving, servingKey, err := ca.issue("kube-apiserver", nil, []net.IP{net.IPv4(127, 0, 0, 1)},
		[]string{"localhost", "kubernetes.default.svc", APIServerHost, tokenproxy.APIServerSAN(ClusterID)}, x509.ExtKeyUsageServerAuth)
	if err != nil {
		return nil, err
	}
	if err := writeCertKey(pki, "apiserver", serving, servingKey); err != nil {
		return nil, err
	}
	admin, adminKey, err := ca.issue("e2e-admin", []string{"system:masters"}, nil, nil, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return nil, err
	}
	if err := writeCertKey(pki, "admin", admin, adminKey); err != nil {
		return nil, err
	}
	saKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	saKeyFile := filepath.Join(pki, "sa.key")
	if err := writePEM(saKeyFile, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(saKey)); err != nil {
		return nil, err
	}
	cp.SAKeyFile = saKeyFile

	etcdClient, err := freePort()
	if err != nil {
		return nil, err
	}
	etcdPeer, err := freePort()
	if err != nil {
		return nil, err
	}
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", etcdClient)
	if err := cp.spawn("etcd", o.Etcd,
		"--name=e2e",
		"--data-dir="+filepath.Join(o.Dir, "etcd"),
		"--listen-client-urls="+etcdURL,
		"--advertise-client-urls="+etcdURL,
		fmt.Sprintf("--listen-peer-urls=http://127.0.0.1:%d", etcdPeer),
		fmt.Sprintf("--initial-advertise-peer-urls=http://127.0.0.1:%d", etcdPeer),
		fmt.Sprintf("--initial-cluster=e2e=http://127.0.0.1:%d", etcdPeer),
		"--unsafe-no-fsync",
		"--log-level=warn",
	); err != nil {
		return nil, err
	}
	if err := cp.spawn("kube-apiserver", o.APIServer,
		"--bind-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", apiPort),
		"--advertise-address=127.0.0.1",
		"--etcd-servers="+etcdURL,
		"--tls-cert-file="+filepath.Join(pki, "apiserver.crt"),
		"--tls-private-key-file="+filepath.Join(pki, "apiserver.key"),
		"--client-ca-file="+cp.CAFile,
		"--service-account-issuer="+cp.URL,
		"--service-account-key-file="+saKeyFile,
		"--service-account-signing-key-file="+saKeyFile,
		"--api-audiences="+cp.URL,
		"--service-cluster-ip-range=10.0.0.0/24",
		"--authorization-mode=RBAC",
		"--endpoint-reconciler-type=none",
		"--allow-privileged=true",
		"--enable-priority-and-fairness=false",
		"--profiling=false",
		"-v=1",
	); err != nil {
		return nil, err
	}

	cp.Admin = &rest.Config{
		Host:            cp.URL,
		TLSClientConfig: rest.TLSClientConfig{CAFile: cp.CAFile, CertFile: filepath.Join(pki, "admin.crt"), KeyFile: filepath.Join(pki, "admin.key")},
		QPS:             100,
		Burst:           200,
	}
	if cp.Client, err = kubernetes.NewForConfig(cp.Admin); err != nil {
		return nil, err
	}
	cp.AdminKubeconfig = filepath.Join(o.Dir, "admin.kubeconfig")
	if err := WriteKubeconfig(cp.AdminKubeconfig, cp.URL, cp.CAFile, map[string]string{
		"client-certificate": filepath.Join(pki, "admin.crt"),
		"client-key":         filepath.Join(pki, "admin.key"),
	}); err != nil {
		return nil, err
	}
	if err := cp.waitReady(ctx, 90*time.Second); err != nil {
		return nil, err
	}
	// Entra (and so our stand-in) reads the issuer's discovery and keys without credentials.
	_, err = cp.Client.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "e2e:service-account-issuer-discovery"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "system:service-account-issuer-discovery"},
		Subjects:   []rbacv1.Subject{{APIGroup: "rbac.authorization.k8s.io", Kind: "Group", Name: "system:unauthenticated"}},
	}, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("binding system:service-account-issuer-discovery to system:unauthenticated: %w", err)
	}
	if err := cp.waitDiscovery(ctx, 30*time.Second); err != nil {
		return nil, err
	}
	return cp, nil
}

// waitReady polls /readyz with the admin's credentials.
func (cp *ControlPlane) waitReady(ctx context.Context, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	var last error
	for time.Now().Before(deadline) {
		for _, p := range cp.procs {
			select {
			case <-p.done:
				return fmt.Errorf("%s exited during start-up; its log %s ends with:\n%s", p.name, p.log, tail(p.log, 30))
			default:
			}
		}
		body, err := cp.Client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err == nil && strings.TrimSpace(string(body)) == "ok" {
			return nil
		}
		last = err
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("kube-apiserver not ready at %s within %s (last error: %v); its log ends with:\n%s", cp.URL, limit, last, tail(cp.procs[len(cp.procs)-1].log, 30))
}

// waitDiscovery waits until the issuer's discovery document is served anonymously (the RBAC
// binding takes a moment to reach the authorizer's cache).
func (cp *ControlPlane) waitDiscovery(ctx context.Context, limit time.Duration) error {
	client := cp.AnonymousHTTPClient()
	deadline := time.Now().Add(limit)
	var last string
	for time.Now().Before(deadline) {
		resp, err := client.Get(cp.URL + "/.well-known/openid-configuration")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("the issuer's discovery at %s/.well-known/openid-configuration is not served anonymously within %s: %s", cp.URL, limit, last)
}

// ServingCertificate issues a TLS server certificate for dnsNames signed by the cluster CA (the
// CA of CAFile, which the API server's serving certificate chains to), with that chain.
func (cp *ControlPlane) ServingCertificate(dnsNames ...string) (tls.Certificate, error) {
	der, key, err := cp.ca.issue(dnsNames[0], nil, nil, dnsNames, x509.ExtKeyUsageServerAuth)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der, cp.ca.cert.Raw}, PrivateKey: key}, nil
}

// AnonymousHTTPClient trusts the control plane's CA and presents no credentials.
func (cp *ControlPlane) AnonymousHTTPClient() *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: cp.CA, MinVersion: tls.VersionTLS12}}}
}

// ServiceAccountKubeconfig writes a kubeconfig whose credential is a TokenRequest token of
// namespace/name (audience: the API server), so a process runs with exactly that service
// account's RBAC.
func (cp *ControlPlane) ServiceAccountKubeconfig(ctx context.Context, namespace, name, path string, ttl time.Duration) error {
	tok, err := cp.ServiceAccountToken(ctx, namespace, name, ttl)
	if err != nil {
		return err
	}
	return WriteKubeconfig(path, cp.URL, cp.CAFile, map[string]string{"token": tok})
}

// ServiceAccountToken is a TokenRequest token of namespace/name for the API server's audience.
func (cp *ControlPlane) ServiceAccountToken(ctx context.Context, namespace, name string, ttl time.Duration) (string, error) {
	secs := int64(ttl.Seconds())
	tr, err := cp.Client.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &secs},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("TokenRequest for service account %s/%s: %w", namespace, name, err)
	}
	cp.mu.Lock()
	cp.tokens = append(cp.tokens, tr.Status.Token)
	cp.mu.Unlock()
	return tr.Status.Token, nil
}

// Tokens returns every token ServiceAccountToken issued (to check that none reaches a log).
func (cp *ControlPlane) Tokens() []string {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return slices.Clone(cp.tokens)
}

// ServiceAccountSigningKey reads the API server's service account signing key (SAKeyFile).
func (cp *ControlPlane) ServiceAccountSigningKey() (*rsa.PrivateKey, error) {
	raw, err := os.ReadFile(cp.SAKeyFile)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(raw)
	if block == nil {
		return nil, fmt.Errorf("%s holds no PEM block", cp.SAKeyFile)
	}
	return x509.ParsePKCS1PrivateKey(block.Bytes)
}

// WriteKubeconfig writes a one-context kubeconfig with the given user fields.
func WriteKubeconfig(path, server, caFile string, user map[string]string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster:\n    server: %s\n    certificate-authority: %s\n", server, caFile)
	b.WriteString("users:\n- name: e2e\n  user:\n")
	for _, k := range []string{"client-certificate", "client-key", "token"} {
		if v, ok := user[k]; ok {
			fmt.Fprintf(&b, "    %s: %q\n", k, v)
		}
	}
	b.WriteString("contexts:\n- name: e2e\n  context:\n    cluster: e2e\n    user: e2e\ncurrent-context: e2e\n")
	return os.WriteFile(path, []byte(b.String()), 0o600)
}

// Stop stops the API server, then etcd (SIGTERM, SIGKILL after 10 s).
func (cp *ControlPlane) Stop() {
	for i := len(cp.procs) - 1; i >= 0; i-- {
		cp.procs[i].stop()
	}
	cp.procs = nil
}

// Logs names the log file of each process.
func (cp *ControlPlane) Logs() map[string]string {
	m := map[string]string{}
	for _, p := range cp.procs {
		m[p.name] = p.log
	}
	return m
}

func (cp *ControlPlane) spawn(name, bin string, args ...string) error {
	p, err := Spawn(cp.dir, name, bin, nil, args...)
	if err != nil {
		return err
	}
	cp.procs = append(cp.procs, p)
	return nil
}

// Spawn starts bin with args (and extra environment), logging to <dir>/<name>.log. The child
// gets SIGTERM if the test process dies.
func Spawn(dir, name, bin string, env []string, args ...string) (*Process, error) {
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("%s binary: %w (run e2e/cluster/setup.sh)", name, err)
	}
	logPath := filepath.Join(dir, name+".log")
	log, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer log.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &Process{name: name, cmd: cmd, done: make(chan struct{}), log: logPath}
	go func() { _ = cmd.Wait(); close(p.done) }()
	return p, nil
}

// Exited reports whether the process has ended.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Log is the path of the process's log file.
func (p *Process) Log() string { return p.log }

// Stop sends SIGTERM and waits up to 10 s before SIGKILL.
func (p *Process) Stop() { p.stop() }

func (p *Process) stop() {
	if p.Exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// Tail returns the last n lines of a file.
func Tail(path string, n int) string { return tail(path, n) }

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// FreePort returns a loopback port free at the time of the call.
func FreePort() (int, error) { return freePort() }

type authority struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newCA() (*authority, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "akv-csi-provider e2e cluster CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return &authority{cert: cert, key: key}, err
}

func (a *authority) issue(cn string, orgs []string, ips []net.IP, dns []string, usage x509.ExtKeyUsage) ([]byte, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: cn, Organization: orgs},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		IPAddresses:  ips,
		DNSNames:     dns,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.cert, &key.PublicKey, a.key)
	return der, key, err
}

func writeCertKey(dir, name string, der []byte, key *ecdsa.PrivateKey) error {
	if err := writePEM(filepath.Join(dir, name+".crt"), "CERTIFICATE", der); err != nil {
		return err
	}
	raw, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	return writePEM(filepath.Join(dir, name+".key"), "PRIVATE KEY", raw)
}

func writePEM(path, typ string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		panic(errors.New("crypto/rand failed"))
	}
	return n
}
