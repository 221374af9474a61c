//go:build cluster

// Package kubelet stands in for the one part of kubelet the Secrets Store CSI Driver sees: the
// CSI volume plugin's handling of an inline (ephemeral) CSI volume, written after kubelet's
// pkg/volume/csi (csi_mounter.go SetUpAt/TearDownAt, csi_client.go NodePublishVolume, csi_util.go
// getPodInfoAttrs) of Kubernetes v1.35. It reads the Pod, the CSIDriver object and any
// nodePublishSecretRef Secret from the API server, asks TokenRequest for the CSIDriver's
// audiences bound to the pod, and calls the driver's NodePublishVolume / NodeUnpublishVolume over
// its unix socket with the request kubelet builds. Nothing here shapes a request for the test's
// convenience; where kubelet has a choice (e.g. the access mode) the same rule is followed.
package kubelet

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	csi "github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/moby/sys/mountinfo"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Volume context keys kubelet adds (csi_util.go getPodInfoAttrs, csi_mounter.go).
const (
	attrPodName        = "csi.storage.k8s.io/pod.name"
	attrPodNamespace   = "csi.storage.k8s.io/pod.namespace"
	attrPodUID         = "csi.storage.k8s.io/pod.uid"
	attrServiceAccount = "csi.storage.k8s.io/serviceAccount.name"
	attrEphemeral      = "csi.storage.k8s.io/ephemeral"
	attrTokens         = "csi.storage.k8s.io/serviceAccount.tokens"
)

// csiTimeout is kubelet's csiTimeout for a CSI operation.
const csiTimeout = 2 * time.Minute

// Kubelet is the stand-in for one node.
type Kubelet struct {
	client   kubernetes.Interface
	nodeName string
	rootDir  string
	conn     *grpc.ClientConn
	node     csi.NodeClient

	// ops serialises publish and unpublish, as kubelet's operation executor allows one
	// operation per volume at a time.
	ops       sync.Mutex
	mu        sync.Mutex
	published map[string]*volume // podUID/volumeName
	tokens    []string
}

type volume struct {
	namespace, pod, name string
	republishes          int
	lastErr              error
}

// New connects to the driver's socket. rootDir plays /var/lib/kubelet.
func New(client kubernetes.Interface, nodeName, rootDir, socket string) (*Kubelet, error) {
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("connecting to the driver's socket %s: %w", socket, err)
	}
	return &Kubelet{client: client, nodeName: nodeName, rootDir: rootDir, conn: conn, node: csi.NewNodeClient(conn), published: map[string]*volume{}}, nil
}

// Close closes the connection to the driver.
func (k *Kubelet) Close() { _ = k.conn.Close() }

// NodeName is the node this kubelet plays.
func (k *Kubelet) NodeName() string { return k.nodeName }

// Register creates the Node object, as kubelet registers itself.
func (k *Kubelet) Register(ctx context.Context) error {
	_, err := k.client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{
		Name:   k.nodeName,
		Labels: map[string]string{"kubernetes.io/hostname": k.nodeName, "kubernetes.io/os": "linux"},
	}}, metav1.CreateOptions{})
	return err
}

// VolumeHandle is kubelet's volume id for an inline volume (csi_mounter.go makeVolumeHandle).
func VolumeHandle(podUID, volumeName string) string {
	return fmt.Sprintf("csi-%x", sha256.Sum256([]byte(podUID+volumeName)))
}

// TargetPath is where kubelet asks the driver to mount the pod's volume
// (<root>/pods/<uid>/volumes/kubernetes.io~csi/<volume>/mount).
func (k *Kubelet) TargetPath(podUID, volumeName string) string {
	return filepath.Join(k.rootDir, "pods", podUID, "volumes", "kubernetes.io~csi", volumeName, "mount")
}

// Publish does what kubelet's SetUpAt does for one inline CSI volume of a pod.
func (k *Kubelet) Publish(ctx context.Context, namespace, podName, volumeName string) error {
	k.ops.Lock()
	defer k.ops.Unlock()
	return k.publish(ctx, namespace, podName, volumeName, false)
}

// publish is Publish with ops held; a republish is skipped once the volume was unpublished.
func (k *Kubelet) publish(ctx context.Context, namespace, podName, volumeName string, republish bool) error {
	ctx, cancel := context.WithTimeout(ctx, csiTimeout)
	defer cancel()
	pod, err := k.client.CoreV1().Pods(namespace).Get(ctx, podName, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("reading pod %s/%s: %w", namespace, podName, err)
	}
	if pod.Spec.NodeName != k.nodeName {
		return fmt.Errorf("pod %s/%s is bound to node %q, not to this kubelet's %q", namespace, podName, pod.Spec.NodeName, k.nodeName)
	}
	i := slices.IndexFunc(pod.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == volumeName })
	if i < 0 || pod.Spec.Volumes[i].CSI == nil {
		return fmt.Errorf("pod %s/%s has no inline CSI volume %q", namespace, podName, volumeName)
	}
	src := pod.Spec.Volumes[i].CSI
	key := string(pod.UID) + "/" + volumeName
	k.mu.Lock()
	_, known := k.published[key]
	k.mu.Unlock()
	if republish && !known {
		return nil
	}
	driver, err := k.csiDriver(ctx, src.Driver)
	if err != nil {
		return err
	}
	if !slices.Contains(driver.Spec.VolumeLifecycleModes, storagev1.VolumeLifecycleEphemeral) {
		return fmt.Errorf("CSIDriver %s does not support the Ephemeral volume lifecycle mode", src.Driver)
	}
	readOnly := src.ReadOnly != nil && *src.ReadOnly
	handle := VolumeHandle(string(pod.UID), volumeName)
	dir := k.TargetPath(string(pod.UID), volumeName)
	parent := filepath.Dir(dir)
	if err := os.MkdirAll(parent, 0o750); err != nil {
		return fmt.Errorf("creating %s: %w", parent, err)
	}

	secrets := map[string]string{}
	if src.NodePublishSecretRef != nil {
		s, err := k.client.CoreV1().Secrets(namespace).Get(ctx, src.NodePublishSecretRef.Name, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("fetching NodePublishSecretRef %s/%s failed: %w", namespace, src.NodePublishSecretRef.Name, err)
		}
		for key, v := range s.Data {
			secrets[key] = string(v)
		}
	}
	attrs := map[string]string{}
	for key, v := range src.VolumeAttributes {
		attrs[key] = v
	}
	if driver.Spec.PodInfoOnMount != nil && *driver.Spec.PodInfoOnMount {
		attrs[attrPodName] = pod.Name
		attrs[attrPodNamespace] = pod.Namespace
		attrs[attrPodUID] = string(pod.UID)
		attrs[attrServiceAccount] = pod.Spec.ServiceAccountName
		attrs[attrEphemeral] = strconv.FormatBool(true)
	}
	if len(driver.Spec.TokenRequests) > 0 {
		tokens, err := k.serviceAccountTokens(ctx, pod, driver)
		if err != nil {
			return err
		}
		if driver.Spec.ServiceAccountTokenInSecrets != nil && *driver.Spec.ServiceAccountTokenInSecrets {
			secrets[attrTokens] = tokens
		} else {
			attrs[attrTokens] = tokens
		}
	}
	mode, err := k.accessMode(ctx)
	if err != nil {
		return err
	}
	if err := saveVolumeData(parent, map[string]string{
		"specVolID":           volumeName,
		"volumeHandle":        handle,
		"driverName":          src.Driver,
		"nodeName":            k.nodeName,
		"volumeLifecycleMode": string(storagev1.VolumeLifecycleEphemeral),
		"attachmentID":        fmt.Sprintf("csi-%x", sha256.Sum256([]byte(handle+src.Driver+k.nodeName))),
	}); err != nil {
		return err
	}
	fsType := ""
	if src.FSType != nil {
		fsType = *src.FSType
	}
	_, err = k.node.NodePublishVolume(ctx, &csi.NodePublishVolumeRequest{
		VolumeId:      handle,
		TargetPath:    dir,
		Readonly:      readOnly,
		VolumeContext: attrs,
		Secrets:       secrets,
		VolumeCapability: &csi.VolumeCapability{
			AccessMode: &csi.VolumeCapability_AccessMode{Mode: mode},
			AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{FsType: fsType}},
		},
	})
	if err != nil {
		// kubelet removes the mount folder only after a final error (csi_client.go
		// isFinalError); an uncertain one may still leave a mount behind.
		if isFinalError(err) {
			removeMountDir(dir)
		}
		return err
	}
	k.mu.Lock()
	if v, ok := k.published[key]; ok {
		v.republishes++
	} else {
		k.published[key] = &volume{namespace: namespace, pod: podName, name: volumeName}
	}
	k.mu.Unlock()
	return nil
}

// csiDriver is the part of a CSIDriver object kubelet's CSI plugin reads. It is decoded from
// the API server's JSON here because this module's k8s.io/api (v0.30, the driver's) predates
// spec.serviceAccountTokenInSecrets (Kubernetes 1.35).
type csiDriver struct {
	Spec struct {
		PodInfoOnMount               *bool                           `json:"podInfoOnMount"`
		RequiresRepublish            *bool                           `json:"requiresRepublish"`
		TokenRequests                []storagev1.TokenRequest        `json:"tokenRequests"`
		ServiceAccountTokenInSecrets *bool                           `json:"serviceAccountTokenInSecrets"`
		VolumeLifecycleModes         []storagev1.VolumeLifecycleMode `json:"volumeLifecycleModes"`
	} `json:"spec"`
}

func (k *Kubelet) csiDriver(ctx context.Context, name string) (*csiDriver, error) {
	raw, err := k.client.StorageV1().RESTClient().Get().AbsPath("/apis/storage.k8s.io/v1/csidrivers", name).DoRaw(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading CSIDriver %s: %w", name, err)
	}
	var d csiDriver
	if err := json.Unmarshal(raw, &d); err != nil {
		return nil, fmt.Errorf("decoding CSIDriver %s: %w", name, err)
	}
	return &d, nil
}

// serviceAccountTokens asks TokenRequest for every audience of the CSIDriver, bound to the pod,
// and returns them as kubelet does: JSON of audience -> TokenRequestStatus.
func (k *Kubelet) serviceAccountTokens(ctx context.Context, pod *corev1.Pod, driver *csiDriver) (string, error) {
	out := map[string]authenticationv1.TokenRequestStatus{}
	for _, r := range driver.Spec.TokenRequests {
		audiences := []string{r.Audience}
		if r.Audience == "" {
			audiences = []string{}
		}
		tr, err := k.client.CoreV1().ServiceAccounts(pod.Namespace).CreateToken(ctx, pod.Spec.ServiceAccountName, &authenticationv1.TokenRequest{
			Spec: authenticationv1.TokenRequestSpec{
				Audiences:         audiences,
				ExpirationSeconds: r.ExpirationSeconds,
				BoundObjectRef:    &authenticationv1.BoundObjectReference{APIVersion: "v1", Kind: "Pod", Name: pod.Name, UID: pod.UID},
			},
		}, metav1.CreateOptions{})
		if err != nil {
			return "", fmt.Errorf("TokenRequest for service account %s/%s (audience %q): %w", pod.Namespace, pod.Spec.ServiceAccountName, r.Audience, err)
		}
		out[r.Audience] = tr.Status
		k.mu.Lock()
		k.tokens = append(k.tokens, tr.Status.Token)
		k.mu.Unlock()
	}
	b, err := json.Marshal(out)
	return string(b), err
}

// accessMode maps ReadWriteOnce (kubelet's mode for inline volumes) as kubelet does: to
// SINGLE_NODE_MULTI_WRITER when the node plugin announces it, else to SINGLE_NODE_WRITER.
func (k *Kubelet) accessMode(ctx context.Context) (csi.VolumeCapability_AccessMode_Mode, error) {
	caps, err := k.node.NodeGetCapabilities(ctx, &csi.NodeGetCapabilitiesRequest{})
	if err != nil {
		return 0, fmt.Errorf("NodeGetCapabilities: %w", err)
	}
	for _, c := range caps.GetCapabilities() {
		if c.GetRpc().GetType() == csi.NodeServiceCapability_RPC_SINGLE_NODE_MULTI_WRITER {
			return csi.VolumeCapability_AccessMode_SINGLE_NODE_MULTI_WRITER, nil
		}
	}
	return csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER, nil
}

// Unpublish does what kubelet's TearDownAt does when the pod goes away.
func (k *Kubelet) Unpublish(ctx context.Context, podUID, volumeName string) error {
	k.ops.Lock()
	defer k.ops.Unlock()
	ctx, cancel := context.WithTimeout(ctx, csiTimeout)
	defer cancel()
	dir := k.TargetPath(podUID, volumeName)
	if _, err := k.node.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: VolumeHandle(podUID, volumeName), TargetPath: dir}); err != nil {
		return fmt.Errorf("NodeUnpublishVolume: %w", err)
	}
	k.mu.Lock()
	delete(k.published, podUID+"/"+volumeName)
	k.mu.Unlock()
	removeMountDir(dir)
	return nil
}

// UnpublishAll unpublishes every volume still published (when the node goes away).
func (k *Kubelet) UnpublishAll(ctx context.Context) error {
	k.mu.Lock()
	keys := make([]string, 0, len(k.published))
	for key := range k.published {
		keys = append(keys, key)
	}
	k.mu.Unlock()
	var errs []error
	for _, key := range keys {
		uid, name, _ := strings.Cut(key, "/")
		errs = append(errs, k.Unpublish(ctx, uid, name))
	}
	return errors.Join(errs...)
}

// Republish re-sends NodePublishVolume for every published volume whose CSIDriver has
// requiresRepublish, every interval, until ctx ends (kubelet does it on each pod sync).
func (k *Kubelet) Republish(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		k.mu.Lock()
		vols := make([]volume, 0, len(k.published))
		for _, v := range k.published {
			vols = append(vols, *v)
		}
		k.mu.Unlock()
		for _, v := range vols {
			if !k.requiresRepublish(ctx, v) {
				continue
			}
			k.ops.Lock()
			err := k.publish(ctx, v.namespace, v.pod, v.name, true)
			k.ops.Unlock()
			if err != nil && ctx.Err() == nil {
				k.mu.Lock()
				for _, p := range k.published {
					if p.namespace == v.namespace && p.pod == v.pod && p.name == v.name {
						p.lastErr = err
					}
				}
				k.mu.Unlock()
			}
		}
	}
}

func (k *Kubelet) requiresRepublish(ctx context.Context, v volume) bool {
	pod, err := k.client.CoreV1().Pods(v.namespace).Get(ctx, v.pod, metav1.GetOptions{})
	if err != nil {
		return false
	}
	for _, vol := range pod.Spec.Volumes {
		if vol.Name == v.name && vol.CSI != nil {
			d, err := k.csiDriver(ctx, vol.CSI.Driver)
			return err == nil && d.Spec.RequiresRepublish != nil && *d.Spec.RequiresRepublish
		}
	}
	return false
}

// Republishes reports how many times the volume was published again, and the last error.
func (k *Kubelet) Republishes(podUID, volumeName string) (int, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	v, ok := k.published[podUID+"/"+volumeName]
	if !ok {
		return 0, errors.New("volume not published")
	}
	return v.republishes, v.lastErr
}

// Tokens returns every service account token TokenRequest issued to this kubelet (to check
// that none reaches a log).
func (k *Kubelet) Tokens() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return slices.Clone(k.tokens)
}

// IsMounted reports whether path is a mount point.
func IsMounted(path string) bool {
	ok, err := mountinfo.Mounted(path)
	return err == nil && ok
}

// isFinalError is kubelet's: these gRPC codes mean the operation may still be in progress.
func isFinalError(err error) bool {
	st, ok := status.FromError(err)
	if !ok {
		return false // not a gRPC status: kubelet treats it as uncertain
	}
	switch st.Code() {
	case codes.Canceled, codes.DeadlineExceeded, codes.Unavailable, codes.ResourceExhausted, codes.Aborted:
		return false
	}
	return true
}

// saveVolumeData writes vol_data.json beside the mount folder, as kubelet does for teardown.
func saveVolumeData(dir string, data map[string]string) error {
	b, err := json.Marshal(data)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "vol_data.json"), b, 0o640)
}

// removeMountDir removes the mount folder if it is not mounted (and empty), then
// vol_data.json and the volume folder, as kubelet's removeMountDir does.
func removeMountDir(dir string) {
	if IsMounted(dir) {
		return
	}
	if err := os.Remove(dir); err != nil && !os.IsNotExist(err) {
		return
	}
	parent := filepath.Dir(dir)
	_ = os.Remove(filepath.Join(parent, "vol_data.json"))
	_ = os.Remove(parent)
}
