// Command demo is the quickstart: it starts a Key Vault emulator, an Entra-like token service and
// a service account token issuer on loopback, seeds a secret and a certificate through
// Microsoft's Go SDK, starts the provider, mounts into ./demo-mount through the Secrets Store
// CSI Driver's own client (workload identity), prints the tree with values masked, rotates the
// secret and mounts again. Every phase is timed. Ctrl-C stops everything.
//
// Usage: demo -provider target/debug/akv-csi-provider [-target demo-mount]
package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/to"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azcertificates"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azsecrets"

	"akv-csi-provider/e2e/internal/harness"
)

func main() {
	provider := flag.String("provider", "target/debug/akv-csi-provider", "provider binary")
	target := flag.String("target", "demo-mount", "folder to mount into")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *provider, *target); err != nil {
		if errors.Is(ctx.Err(), context.Canceled) {
			fmt.Println("\ninterrupted: stopped the provider and the emulated services")
			os.Exit(130)
		}
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		os.Exit(1)
	}
}

type timer struct{ phases []string }

func (t *timer) phase(name string, f func() error) error {
	start := time.Now()
	fmt.Printf("\n==> %s\n", name)
	err := f()
	d := time.Since(start)
	t.phases = append(t.phases, fmt.Sprintf("  %-72s %8s", name, d.Round(time.Millisecond)))
	if err == nil {
		fmt.Printf("    done in %s\n", d.Round(time.Millisecond))
	}
	return err
}

func run(ctx context.Context, provider, target string) error {
	var (
		t   timer
		env *harness.Env
	)
	total := time.Now()
	defer func() {
		if env != nil {
			env.Close()
			_ = os.RemoveAll(env.Dir)
		}
	}()
	err := t.phase("start Key Vault emulator, token service and service account issuer", func() error {
		var err error
		env, err = harness.Start(harness.Options{DeferProvider: true})
		if err == nil {
			fmt.Printf("    vault  https://%s.%s:%d/ (TLS, challenge auth, tokens verified)\n", harness.VaultName, harness.VaultDNSSuffix, env.VaultPort)
			fmt.Printf("    tokens %s/<tenant>/oauth2/v2.0/token (checks workload identity assertions against %s)\n", env.Tokens.Authority, env.Issuer.URL)
		}
		return err
	})
	if err != nil {
		return err
	}
	secrets := env.Secrets(harness.VaultName)
	var v1 string
	err = t.phase("seed a secret and a certificate (Microsoft's Go SDK)", func() error {
		r, err := secrets.SetSecret(ctx, "db-password", azsecrets.SetSecretParameters{Value: to.Ptr("first-" + rand.Text()[:12])}, nil)
		if err != nil {
			return err
		}
		v1 = r.ID.Version()
		fmt.Printf("    secret/db-password  version %s\n", v1)
		_, err = env.Certificates(harness.VaultName).CreateCertificate(ctx, "web-tls", azcertificates.CreateCertificateParameters{CertificatePolicy: &azcertificates.CertificatePolicy{
			IssuerParameters:          &azcertificates.IssuerParameters{Name: to.Ptr("Self")},
			KeyProperties:             &azcertificates.KeyProperties{KeyType: to.Ptr(azcertificates.KeyTypeEC), Curve: to.Ptr(azcertificates.CurveNameP256), Exportable: to.Ptr(true)},
			SecretProperties:          &azcertificates.SecretProperties{ContentType: to.Ptr("application/x-pem-file")},
			X509CertificateProperties: &azcertificates.X509CertificateProperties{Subject: to.Ptr("CN=web.demo.example"), ValidityInMonths: to.Ptr[int32](12)},
		}}, nil)
		if err == nil {
			fmt.Println("    certificate/web-tls (self-signed, EC P-256, PEM-backed secret)")
		}
		return err
	})
	if err != nil {
		return err
	}
	err = t.phase("start the provider ("+provider+")", func() error {
		if err := env.StartProvider(provider); err != nil {
			return err
		}
		v, err := env.Version(ctx)
		if err == nil {
			fmt.Printf("    listening on %s/azure.sock, runtime version %s\n", env.SocketDir, v)
		}
		return err
	})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(target, 0o755); err != nil {
		return err
	}
	objects := harness.Objects(
		harness.Object("objectName", "db-password", "objectType", "secret", "filePermission", "0600"),
		harness.Object("objectName", "web-tls", "objectType", "secret", "objectAlias", "tls/web.pem"),
	)
	mount := func() (map[string]string, error) {
		tokens, err := env.WorkloadIdentityTokens(harness.DefaultPod)
		if err != nil {
			return nil, err
		}
		params := env.Params(objects, map[string]string{"clientID": harness.WIClientID})
		versions, _, err := env.Mount(ctx, harness.Attributes(params, harness.DefaultPod, tokens), harness.NoSecretRef, target)
		return versions, err
	}
	err = t.phase("mount into "+target+" through the driver's client (workload identity)", func() error {
		versions, err := mount()
		if err != nil {
			return err
		}
		printVersions(versions)
		return printTree(target)
	})
	if err != nil {
		return err
	}
	err = t.phase("rotate: new version of db-password, mount again", func() error {
		before, _ := os.Readlink(filepath.Join(target, "..data"))
		r, err := secrets.SetSecret(ctx, "db-password", azsecrets.SetSecretParameters{Value: to.Ptr("second-" + rand.Text()[:12])}, nil)
		if err != nil {
			return err
		}
		fmt.Printf("    secret/db-password  new version %s (was %s)\n", r.ID.Version(), v1)
		versions, err := mount()
		if err != nil {
			return err
		}
		printVersions(versions)
		after, _ := os.Readlink(filepath.Join(target, "..data"))
		fmt.Printf("    ..data swapped: %s -> %s\n", before, after)
		return printFile(target, "db-password")
	})
	if err != nil {
		return err
	}
	fmt.Println("\nphase timings:")
	for _, p := range t.phases {
		fmt.Println(p)
	}
	fmt.Printf("  %-72s %8s\n", "total", time.Since(total).Round(time.Millisecond))
	fmt.Printf("\nthe files stay in %s; the provider and the services are stopped now.\n", target)
	return nil
}

func printVersions(v map[string]string) {
	keys := make([]string, 0, len(v))
	for k := range v {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Printf("    object version  %-20s %s\n", k, v[k])
	}
}

// printTree lists the target folder as the atomic writer left it, values masked.
func printTree(target string) error {
	fmt.Printf("    %s/\n", target)
	return filepath.WalkDir(target, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == target {
			return err
		}
		rel, _ := filepath.Rel(target, p)
		depth := strings.Count(rel, string(filepath.Separator))
		indent := strings.Repeat("    ", depth+1)
		info, err := os.Lstat(p)
		if err != nil {
			return err
		}
		switch {
		case info.Mode()&fs.ModeSymlink != 0:
			dest, _ := os.Readlink(p)
			fmt.Printf("    %s%s -> %s\n", indent, d.Name(), dest)
		case d.IsDir():
			fmt.Printf("    %s%s/\n", indent, d.Name())
		default:
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			fmt.Printf("    %s%s  %s  %s\n", indent, d.Name(), info.Mode().Perm(), mask(data))
		}
		return nil
	})
}

func printFile(target, name string) error {
	p := filepath.Join(target, name)
	data, err := os.ReadFile(p)
	if err != nil {
		return err
	}
	info, _ := os.Stat(p)
	fmt.Printf("    %s/%s  %s  %s\n", target, name, info.Mode().Perm(), mask(data))
	return nil
}

// mask describes content without showing it: PEM block types, or size and a hash prefix.
func mask(data []byte) string {
	var kinds []string
	rest := data
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		kinds = append(kinds, b.Type)
	}
	sum := sha256.Sum256(data)
	fp := hex.EncodeToString(sum[:4])
	if len(kinds) > 0 {
		return fmt.Sprintf("PEM [%s] %d bytes, sha256 %s… (masked)", strings.Join(kinds, ", "), len(data), fp)
	}
	return fmt.Sprintf("******** %d bytes, sha256 %s… (masked)", len(data), fp)
}
