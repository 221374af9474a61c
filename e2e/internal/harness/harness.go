// Package harness starts what the provider talks to (a Key Vault emulator and an Entra-like
// token service over TLS on loopback, and a cluster-like service account token issuer), starts
// the provider binary on a unix socket, and calls it the way the Secrets Store CSI Driver does:
// through the driver's own client package, its attribute layout and its atomic file writer.
package harness

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azcertificates"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"
	secretsstore "sigs.k8s.io/secrets-store-csi-driver/pkg/secrets-store"

	"akv-csi-provider/e2e/internal/entra"
	"akv-csi-provider/e2e/internal/kvemu"
	"akv-csi-provider/e2e/internal/pki"
)

// Fixed identities of the test tenant.
const (
	Tenant          = "72f988bf-86f1-41af-91ab-2d7cd011db47"
	AdminClientID   = "0a0a0a0a-0000-4000-8000-00000000ad01"
	SPClientID      = "11111111-2222-3333-4444-555555555555"
	SPClientSecret  = "sp-Secret~value.that-must-never-leak"
	WIClientID      = "66666666-7777-8888-9999-000000000000"
	Namespace       = "shop"
	ServiceAccount  = "web"
	PodName         = "web-0"
	PodUID          = "7f3b9c1e-2d4a-4e6f-8a1b-3c5d7e9f0a2b"
	VaultName       = "kv1"
	VaultDNSSuffix  = "vault.localhost"
	AuthorityHost   = "login.localhost"
	ProviderName    = "azure"
	FilePermission  = "420" // json.Marshal(os.FileMode(0644)), what the driver sends
	SPCName         = "app-secrets"
	DefaultTokenTTL = time.Hour
)

// Options for Start.
type Options struct {
	// ProviderBin is the provider binary (required).
	ProviderBin string
	// ProviderArgs are extra flags.
	ProviderArgs []string
	// Dir holds sockets, logs and files; a temporary folder when empty.
	Dir string
	// DeferProvider starts only the services; call StartProvider later.
	DeferProvider bool
}

// Env is a running environment.
type Env struct {
	Dir       string
	CAFile    string
	CloudFile string
	SocketDir string
	LogFile   string

	CA     *pki.Authority
	Tokens *entra.TokenService
	Issuer *entra.Issuer
	Vault  *kvemu.Server

	VaultPort     int
	AuthorityPort int
	// VaultResource is the audience of vault tokens, named in the vault's challenge. It carries
	// the port: Microsoft's Go SDK compares the challenge host with the vault's host:port.
	VaultResource string

	Builder *secretsstore.PluginClientBuilder
	// HTTPClient reaches the emulated hosts (names under .localhost go to 127.0.0.1) trusting CA.
	HTTPClient *http.Client

	provider *exec.Cmd
	exited   chan struct{} // closed when the provider process has been reaped
	servers  []*http.Server
}

// Start brings everything up. On error, whatever started is stopped again.
func Start(opts Options) (env *Env, err error) {
	e := &Env{Dir: opts.Dir}
	defer func() {
		if err != nil {
			e.Close()
		}
	}()
	if e.Dir == "" {
		if e.Dir, err = os.MkdirTemp("", "akv-e2e-"); err != nil {
			return nil, err
		}
	}
	if e.CA, err = pki.NewAuthority("akv-csi-provider e2e CA"); err != nil {
		return nil, err
	}
	tlsConf, err := e.CA.ServerTLS("*."+VaultDNSSuffix, VaultDNSSuffix, AuthorityHost, "localhost", "127.0.0.1")
	if err != nil {
		return nil, err
	}
	vaultLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	authLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	e.VaultPort = vaultLn.Addr().(*net.TCPAddr).Port
	e.AuthorityPort = authLn.Addr().(*net.TCPAddr).Port

	e.VaultResource = fmt.Sprintf("https://%s:%d", VaultDNSSuffix, e.VaultPort)
	loopback := &http.Client{Timeout: 5 * time.Second}
	if e.Tokens, err = entra.NewTokenService(fmt.Sprintf("https://%s:%d", AuthorityHost, e.AuthorityPort), loopback); err != nil {
		return nil, err
	}
	e.Vault = kvemu.New(kvemu.Options{
		DNSSuffix: VaultDNSSuffix,
		Resource:  e.VaultResource,
		Authority: e.Tokens.Authority,
		Verify: func(token, resource string) (string, string, error) {
			p, err := e.Tokens.VerifyAccessToken(token, resource)
			var audience *entra.AudienceError
			switch {
			case errors.Is(err, entra.ErrTokenExpired):
				err = &kvemu.TokenError{Reason: kvemu.TokenExpired}
			case errors.As(err, &audience):
				err = &kvemu.TokenError{Reason: kvemu.TokenWrongAudience, Found: audience.Found}
			}
			return p.Tenant, p.ClientID, err
		},
	})
	e.serveTLS(vaultLn, tlsConf, e.Vault)
	e.serveTLS(authLn, tlsConf, e.Tokens)
	if e.Issuer, err = entra.StartIssuer(); err != nil {
		return nil, err
	}
	e.Tokens.AddApp(entra.App{Tenant: Tenant, ClientID: AdminClientID})
	e.Tokens.AddApp(entra.App{Tenant: Tenant, ClientID: SPClientID, Secrets: []string{SPClientSecret}})
	e.Tokens.AddApp(entra.App{Tenant: Tenant, ClientID: WIClientID, Federated: []entra.FederatedCredential{{
		Issuer: e.Issuer.URL, Subject: entra.Subject(Namespace, ServiceAccount), Audiences: []string{entra.WorkloadIdentityAudience},
	}}})
	e.Vault.AddVault(VaultName, Tenant)

	e.HTTPClient = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: e.CA.Pool(), MinVersion: tls.VersionTLS12},
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, port, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			if host == "localhost" || strings.HasSuffix(host, ".localhost") {
				addr = net.JoinHostPort("127.0.0.1", port)
			}
			return (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, network, addr)
		},
	}}

	e.CAFile = filepath.Join(e.Dir, "ca.pem")
	if err = e.CA.WriteCA(e.CAFile); err != nil {
		return nil, err
	}
	e.CloudFile = filepath.Join(e.Dir, "azurestackcloud.json")
	cloud := map[string]string{
		"name":                    "AzureStackCloud",
		"activeDirectoryEndpoint": e.Tokens.Authority + "/",
		"keyVaultEndpoint":        e.VaultResource + "/",
		"keyVaultDNSSuffix":       fmt.Sprintf("%s:%d", VaultDNSSuffix, e.VaultPort),
		"resourceManagerEndpoint": "https://management.localhost/",
	}
	raw, _ := json.MarshalIndent(cloud, "", "  ")
	if err = os.WriteFile(e.CloudFile, raw, 0o644); err != nil {
		return nil, err
	}

	e.SocketDir = filepath.Join(e.Dir, "providers")
	if err = os.MkdirAll(e.SocketDir, 0o755); err != nil {
		return nil, err
	}
	if !opts.DeferProvider {
		if err = e.StartProvider(opts.ProviderBin, opts.ProviderArgs...); err != nil {
			return nil, err
		}
	}
	return e, nil
}

func (e *Env) serveTLS(ln net.Listener, conf *tls.Config, h http.Handler) {
	srv := &http.Server{Handler: h, TLSConfig: conf, ReadHeaderTimeout: 10 * time.Second}
	e.servers = append(e.servers, srv)
	go func() { _ = srv.ServeTLS(ln, "", "") }()
}

// freePort returns a loopback port free at the time of the call.
func freePort() int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// ProviderArgs are the flags that point the provider at this environment. The health and
// metrics ports are free ones, so several providers (tests, the demo) can run side by side.
func (e *Env) ProviderArgs() []string {
	return []string{
		fmt.Sprintf("--healthz-port=%d", freePort()),
		fmt.Sprintf("--prometheus-port=%d", freePort()),
		"--endpoint=unix://" + filepath.Join(e.SocketDir, ProviderName+".sock"),
		"--ca-file=" + e.CAFile,
		"--resolve=*." + VaultDNSSuffix + "=127.0.0.1",
		"--resolve=" + AuthorityHost + "=127.0.0.1",
		"-v=5", // every detail the provider logs goes through the leak scan (main_test.go)
		// The tests seed secrets and mount at once, one after the other: a listing shared for
		// the default 5s would hide secrets a test has just created.
		"--listing-window=0s",
	}
}

// StartProvider starts the provider binary with the environment's flags plus extra, waits for
// its socket, and connects the driver's client builder to the socket folder.
func (e *Env) StartProvider(bin string, extra ...string) error {
	if bin == "" {
		return errors.New("no provider binary given")
	}
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("provider binary: %w (build it with: cargo build -p akv-csi-provider)", err)
	}
	e.LogFile = filepath.Join(e.Dir, "provider.log")
	log, err := os.Create(e.LogFile)
	if err != nil {
		return err
	}
	cmd := exec.Command(bin, append(e.ProviderArgs(), extra...)...)
	cmd.Stdout, cmd.Stderr = log, log
	// If the test or demo process dies without cleaning up, the provider goes too.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	cmd.Env = append(os.Environ(), "NO_COLOR=1")
	if err := cmd.Start(); err != nil {
		log.Close()
		return err
	}
	log.Close()
	e.provider = cmd
	e.exited = make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(e.exited) }()
	sock := filepath.Join(e.SocketDir, ProviderName+".sock")
	deadline := time.After(30 * time.Second)
	for {
		if _, err := os.Stat(sock); err == nil {
			e.Builder = secretsstore.NewPluginClientBuilder([]string{e.SocketDir})
			return nil
		}
		select {
		case <-e.exited:
			e.provider = nil
			return fmt.Errorf("provider exited before listening (%v):\n%s", waitErr, e.ProviderLog())
		case <-deadline:
			return fmt.Errorf("provider did not create %s within 30s:\n%s", sock, e.ProviderLog())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// ProviderLog returns what the provider printed so far.
func (e *Env) ProviderLog() string {
	b, _ := os.ReadFile(e.LogFile)
	return string(b)
}

// Close stops the provider (SIGTERM, then SIGKILL after 10s) and the servers.
func (e *Env) Close() {
	if e.Builder != nil {
		e.Builder.Cleanup()
	}
	if e.provider != nil && e.provider.Process != nil {
		_ = e.provider.Process.Signal(syscall.SIGTERM)
		select {
		case <-e.exited:
		case <-time.After(10 * time.Second):
			_ = e.provider.Process.Kill()
			<-e.exited
		}
		e.provider = nil
	}
	for _, s := range e.servers {
		_ = s.Close()
	}
	if e.Issuer != nil {
		e.Issuer.Close()
	}
}

// Pod is what kubelet tells the driver about the pod.
type Pod struct {
	Name, Namespace, UID, ServiceAccount string
}

// DefaultPod is the pod of the fixed workload identity.
var DefaultPod = Pod{Name: PodName, Namespace: Namespace, UID: PodUID, ServiceAccount: ServiceAccount}

// Params returns SecretProviderClass parameters for the emulated Azure Stack cloud.
func (e *Env) Params(objects string, extra map[string]string) map[string]string {
	p := map[string]string{
		"keyvaultName":     VaultName,
		"tenantID":         Tenant,
		"cloudName":        "AzureStackCloud",
		"cloudEnvFileName": e.CloudFile,
		"objects":          objects,
	}
	maps.Copy(p, extra)
	return p
}

// Attributes builds the Mount attributes exactly as the driver's NodePublishVolume does: the SPC
// parameters, then every volume attribute kubelet sent, then the service account tokens (a JSON
// string) when the CSIDriver object requests any.
func Attributes(params map[string]string, pod Pod, tokens string) string {
	attrs := maps.Clone(params)
	maps.Copy(attrs, map[string]string{
		"secretProviderClass":                    SPCName,
		"csi.storage.k8s.io/pod.name":            pod.Name,
		"csi.storage.k8s.io/pod.namespace":       pod.Namespace,
		"csi.storage.k8s.io/pod.uid":             pod.UID,
		"csi.storage.k8s.io/serviceAccount.name": pod.ServiceAccount,
		"csi.storage.k8s.io/ephemeral":           "false",
	})
	if tokens != "" {
		attrs["csi.storage.k8s.io/serviceAccount.tokens"] = tokens
	}
	b, _ := json.Marshal(attrs)
	return string(b)
}

// TokensAttribute is kubelet's serviceAccount.tokens value for one audience.
func TokensAttribute(audience, token string, exp time.Time) string {
	b, _ := json.Marshal(map[string]map[string]string{audience: {"token": token, "expirationTimestamp": exp.UTC().Format(time.RFC3339)}})
	return string(b)
}

// WorkloadIdentityTokens mints the pod's token for api://AzureADTokenExchange.
func (e *Env) WorkloadIdentityTokens(pod Pod) (string, error) {
	tok, exp, err := e.Issuer.Mint(pod.Namespace, pod.ServiceAccount, entra.WorkloadIdentityAudience, DefaultTokenTTL)
	if err != nil {
		return "", err
	}
	return TokensAttribute(entra.WorkloadIdentityAudience, tok, exp), nil
}

// NodePublishSecrets is the Mount request's secrets field as the driver builds it: json.Marshal
// of NodePublishVolumeRequest.secrets (pkg/secrets-store/nodeserver.go in the driver v1.6.0).
// For a volume without a nodePublishSecretRef that map is nil and the field is "null".
func NodePublishSecrets(data map[string]string) string {
	b, _ := json.Marshal(data)
	return string(b)
}

// NoSecretRef is what the driver sends as secrets for a volume without a nodePublishSecretRef
// (workload identity, managed identity, pod identity): "null".
var NoSecretRef = NodePublishSecrets(nil)

// SPSecrets is the node-publish secret of the service principal.
func SPSecrets(clientID, secret string) string {
	return NodePublishSecrets(map[string]string{"clientid": clientID, "clientsecret": secret})
}

// Mount calls the provider through the driver's client and writes the reply with the driver's
// atomic writer into target. It returns object versions, the driver's error code and the error.
func (e *Env) Mount(ctx context.Context, attributes, secrets, target string) (map[string]string, string, error) {
	client, err := e.Builder.Get(ctx, ProviderName)
	if err != nil {
		return nil, "", err
	}
	return secretsstore.MountContent(ctx, client, attributes, secrets, target, FilePermission, nil)
}

// Version calls Version through the driver's client.
func (e *Env) Version(ctx context.Context) (string, error) {
	client, err := e.Builder.Get(ctx, ProviderName)
	if err != nil {
		return "", err
	}
	return secretsstore.Version(ctx, client)
}

// VaultURL is the vault's URL as the provider builds it.
func (e *Env) VaultURL(name string) string {
	return fmt.Sprintf("https://%s.%s:%d/", name, VaultDNSSuffix, e.VaultPort)
}

type adminCredential struct{ e *Env }

func (a adminCredential) GetToken(_ context.Context, _ policy.TokenRequestOptions) (azcore.AccessToken, error) {
	tok, exp, err := a.e.Tokens.Issue(Tenant, AdminClientID, a.e.VaultResource)
	return azcore.AccessToken{Token: tok, ExpiresOn: exp}, err
}

func (e *Env) clientOptions() policy.ClientOptions {
	return policy.ClientOptions{Transport: e.HTTPClient, Retry: policy.RetryOptions{MaxRetries: -1}}
}

// Secrets is Microsoft's Go client for the vault, authenticated as the administrator.
func (e *Env) Secrets(vault string) *azsecrets.Client {
	c, err := azsecrets.NewClient(e.VaultURL(vault), adminCredential{e}, &azsecrets.ClientOptions{ClientOptions: e.clientOptions()})
	if err != nil {
		panic(err)
	}
	return c
}

// Keys is Microsoft's Go keys client for the vault.
func (e *Env) Keys(vault string) *azkeys.Client {
	c, err := azkeys.NewClient(e.VaultURL(vault), adminCredential{e}, &azkeys.ClientOptions{ClientOptions: e.clientOptions()})
	if err != nil {
		panic(err)
	}
	return c
}

// Certificates is Microsoft's Go certificates client for the vault.
func (e *Env) Certificates(vault string) *azcertificates.Client {
	c, err := azcertificates.NewClient(e.VaultURL(vault), adminCredential{e}, &azcertificates.ClientOptions{ClientOptions: e.clientOptions()})
	if err != nil {
		panic(err)
	}
	return c
}

// Objects renders the SPC objects parameter: each object is a YAML block string in array.
func Objects(objs ...string) string {
	var b strings.Builder
	b.WriteString("array:\n")
	for _, o := range objs {
		b.WriteString("  - |\n")
		for _, line := range strings.Split(strings.TrimRight(o, "\n"), "\n") {
			b.WriteString("    " + line + "\n")
		}
	}
	return b.String()
}

// Object renders one object description from key/value pairs (values double-quoted).
func Object(kv ...string) string {
	var b strings.Builder
	for i := 0; i+1 < len(kv); i += 2 {
		v, _ := json.Marshal(kv[i+1])
		fmt.Fprintf(&b, "%s: %s\n", kv[i], v)
	}
	return b.String()
}
