package e2e

import (
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"akv-csi-provider/e2e/internal/entra"
	"akv-csi-provider/e2e/internal/harness"
)

// vaultReadersSince returns the client ids that read from the vault after request index from.
func vaultReadersSince(from int) []string {
	var ids []string
	for _, r := range env.Vault.Requests()[from:] {
		if r.Status == 200 && r.Method == "GET" && !slices.Contains(ids, r.ClientID) {
			ids = append(ids, r.ClientID)
		}
	}
	return ids
}

func outcomesSince(from int) []entra.Outcome { return env.Tokens.Outcomes()[from:] }

func wiMount(t *testing.T, target, objects, tokens string) error {
	t.Helper()
	params := env.Params(objects, map[string]string{"clientID": harness.WIClientID})
	_, _, err := env.Mount(ctx(t), harness.Attributes(params, harness.DefaultPod, tokens), harness.NoSecretRef, target)
	return err
}

// TestWorkloadIdentity: the pod's service account token (minted by the test issuer) is
// exchanged at the token service, which checks it against the issuer's JWKS, issuer, subject
// and audience. A forged token (same claims and key id, another key) and a token of another
// service account are refused, and the files already mounted stay as they were.
func TestWorkloadIdentity(t *testing.T) {
	ver := setSecret(t, "wi-secret", "from-workload-identity")
	objects := harness.Objects(harness.Object("objectName", "wi-secret", "objectType", "secret"))
	target := t.TempDir()
	reqs, outs := len(env.Vault.Requests()), len(env.Tokens.Outcomes())

	tokens, err := env.WorkloadIdentityTokens(harness.DefaultPod)
	if err != nil {
		t.Fatal(err)
	}
	params := env.Params(objects, map[string]string{"clientID": harness.WIClientID})
	versions, _, err := env.Mount(ctx(t), harness.Attributes(params, harness.DefaultPod, tokens), harness.NoSecretRef, target)
	if err != nil {
		t.Fatalf("workload identity mount: %v", err)
	}
	if versions["secret/wi-secret"] != ver {
		t.Errorf("versions %v", versions)
	}
	if got := vaultReadersSince(reqs); !slices.Equal(got, []string{harness.WIClientID}) {
		t.Errorf("vault read by %v, want the workload identity only", got)
	}
	if got := outcomesSince(outs); len(got) != 1 || got[0].Grant != "client_assertion" || got[0].Status != 200 {
		t.Errorf("token requests %+v, want one accepted client assertion", got)
	}
	before := takeSnapshot(t, target)
	if string(before.Files["wi-secret"].Data) != "from-workload-identity" {
		t.Fatalf("wi-secret = %q", before.Files["wi-secret"].Data)
	}

	cases := []struct {
		name string
		code int // AADSTS code the token service must answer
		tok  func() (string, error)
	}{
		{"forged signature", 50013, func() (string, error) {
			return env.Issuer.Forge(harness.Namespace, harness.ServiceAccount, entra.WorkloadIdentityAudience, time.Hour)
		}},
		{"another service account", 700213, func() (string, error) {
			tok, _, err := env.Issuer.Mint(harness.Namespace, "intruder", entra.WorkloadIdentityAudience, time.Hour)
			return tok, err
		}},
		{"wrong audience", 700212, func() (string, error) {
			tok, _, err := env.Issuer.Mint(harness.Namespace, harness.ServiceAccount, "api://SomethingElse", time.Hour)
			return tok, err
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tok, err := c.tok()
			if err != nil {
				t.Fatal(err)
			}
			outs := len(env.Tokens.Outcomes())
			err = wiMount(t, target, objects, harness.TokensAttribute(entra.WorkloadIdentityAudience, tok, time.Now().Add(time.Hour)))
			st := wantCode(t, err, codes.PermissionDenied, codes.Unauthenticated)
			if !strings.Contains(st.Message(), harness.WIClientID) {
				t.Errorf("the message does not name the identity: %s", st.Message())
			}
			got := outcomesSince(outs)
			if len(got) == 0 || got[len(got)-1].Code != c.code {
				t.Errorf("token service outcomes %+v, want AADSTS%d (the provider must not reuse the earlier token)", got, c.code)
			}
			sameSnapshot(t, before, takeSnapshot(t, target))
			assertNoLeaks(t, tok)
		})
	}
	assertNoLeaks(t, "from-workload-identity")
}

// TestWorkloadIdentityTokenInSecrets: Kubernetes 1.35 with the CSIDriver's
// serviceAccountTokenInSecrets: true. Kubelet puts the tokens entry into the node-publish
// secrets; the driver v1.6.0 copies it into the attributes and passes the secrets on as they are
// (getServiceAccountTokens and json.Marshal in pkg/secrets-store/nodeserver.go). Both the v1.6
// form (token in both) and the token only in secrets mount, and the token never shows in the log.
func TestWorkloadIdentityTokenInSecrets(t *testing.T) {
	ver := setSecret(t, "wi-in-secrets", "token-in-secrets")
	objects := harness.Objects(harness.Object("objectName", "wi-in-secrets", "objectType", "secret"))
	tokens, err := env.WorkloadIdentityTokens(harness.DefaultPod)
	if err != nil {
		t.Fatal(err)
	}
	secrets := harness.NodePublishSecrets(map[string]string{"csi.storage.k8s.io/serviceAccount.tokens": tokens})
	params := env.Params(objects, map[string]string{"clientID": harness.WIClientID})
	for name, attrTokens := range map[string]string{"in both (driver v1.6)": tokens, "only in secrets": ""} {
		t.Run(name, func(t *testing.T) {
			target := t.TempDir()
			versions, _, err := env.Mount(ctx(t), harness.Attributes(params, harness.DefaultPod, attrTokens), secrets, target)
			if err != nil {
				t.Fatalf("mount: %v", err)
			}
			if versions["secret/wi-in-secrets"] != ver {
				t.Errorf("versions %v", versions)
			}
			if got := takeSnapshot(t, target).Files["wi-in-secrets"].Data; string(got) != "token-in-secrets" {
				t.Errorf("wi-in-secrets = %q", got)
			}
		})
	}
	assertNoLeaks(t, "token-in-secrets")
}

// TestServicePrincipal: clientid/clientsecret from the node-publish secret; a wrong secret is
// refused by the token service (AADSTS7000215) and leaves the files alone.
func TestServicePrincipal(t *testing.T) {
	ver := setSecret(t, "sp-secret", "from-service-principal")
	obj := harness.Object("objectName", "sp-secret", "objectType", "secret")
	target := t.TempDir()
	reqs := len(env.Vault.Requests())
	versions, err := spMount(t, target, obj)
	if err != nil {
		t.Fatalf("service principal mount: %v", err)
	}
	if versions["secret/sp-secret"] != ver {
		t.Errorf("versions %v", versions)
	}
	if got := vaultReadersSince(reqs); !slices.Equal(got, []string{harness.SPClientID}) {
		t.Errorf("vault read by %v, want the service principal only", got)
	}
	for _, r := range env.Vault.Requests()[reqs:] {
		if r.ClientID == harness.SPClientID {
			t.Logf("the provider reads with api-version %s", r.APIVersion)
			break
		}
	}
	before := takeSnapshot(t, target)

	outs := len(env.Tokens.Outcomes())
	attrs := harness.Attributes(env.Params(harness.Objects(obj), nil), harness.DefaultPod, "")
	_, _, err = env.Mount(ctx(t), attrs, harness.SPSecrets(harness.SPClientID, "not-the-right-secret"), target)
	st := wantCode(t, err, codes.PermissionDenied, codes.Unauthenticated)
	if !strings.Contains(st.Message(), "AADSTS7000215") {
		t.Errorf("message: %s", st.Message())
	}
	if got := outcomesSince(outs); len(got) == 0 || got[len(got)-1].Code != 7000215 {
		t.Errorf("token service outcomes %+v", got)
	}
	sameSnapshot(t, before, takeSnapshot(t, target))
	assertNoLeaks(t, "from-service-principal", "not-the-right-secret")
}
