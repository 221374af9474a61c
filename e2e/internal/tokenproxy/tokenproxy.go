// Package tokenproxy is a stand-in for AKS's identity-binding token proxy: a TLS server on
// loopback that answers only to its own server name, derived from the cluster id, and forwards
// the client-assertion token request (POST /<tenant>/oauth2/v2.0/token) to an Entra endpoint,
// returning Entra's answer unchanged.
//
// Its certificate is signed by the cluster's CA (the one the API server's serving certificate
// chains to), so a client that trusts only the cluster CA can verify both, and names only the
// computed server name: a ClientHello for any other name (or none) gets no certificate and the
// handshake fails (a fatal unrecognized_name alert). Every handshake and request is recorded
// for the tests to assert on.
package tokenproxy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base32"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// Salt is prefixed to the cluster id before hashing (AKS's derivation of the proxy's name).
const Salt = "identity-binding"

// maxBody bounds a forwarded request body (a token request is a few KiB).
const maxBody = 1 << 20

// ServerNameForCluster is the token proxy's TLS server name for a cluster id: "a" + unpadded
// base32hex (RFC 4648 §7) of SHA-256(Salt + clusterID), lowercased, + ".ests.aks".
func ServerNameForCluster(clusterID string) string {
	sum := sha256.Sum256([]byte(Salt + clusterID))
	enc := base32.HexEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:])
	return "a" + strings.ToLower(enc) + ".ests.aks"
}

// APIServerSAN is the SAN of an AKS API server's serving certificate that carries the cluster id.
func APIServerSAN(clusterID string) string {
	return "hcp-kubernetes." + clusterID + ".svc.cluster.local"
}

// Options for Start.
type Options struct {
	// ServerName is the only TLS server name answered (ServerNameForCluster of the cluster id).
	ServerName string
	// Certificate is the proxy's certificate for ServerName, with its chain to the cluster CA.
	Certificate tls.Certificate
	// Upstream is the Entra authority the token requests go to, e.g. https://login.localhost:1234.
	Upstream string
	// Client reaches Upstream (its CA, its name resolution).
	Client *http.Client
}

// Request is one HTTP request the proxy received.
type Request struct {
	// SNI is the server name of the TLS connection it came on.
	SNI string
	// Host is its Host header.
	Host string
	// Method and PathQuery (path and raw query, as sent).
	Method, PathQuery string
	// ContentType is its Content-Type header.
	ContentType string
	// Status is what the proxy answered (Entra's status, or 502 when Entra could not be reached).
	Status int
}

// Handshake is one TLS handshake attempt.
type Handshake struct {
	// SNI is the server name the client asked for ("" when none).
	SNI string
	// Served tells whether a certificate was presented (the name was the proxy's).
	Served bool
	// Err is why the handshake failed ("" on success), as the server saw it.
	Err string
}

// Proxy is the running stand-in.
type Proxy struct {
	// URL is https://127.0.0.1:<port> (clients reach it under a name resolved to 127.0.0.1).
	URL string
	// Port is the TCP port on 127.0.0.1.
	Port int

	o     Options
	ln    net.Listener
	srv   *http.Server
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once

	mu         sync.Mutex
	requests   []Request
	handshakes []Handshake
}

// Start listens on 127.0.0.1 (a free port) and serves until Close.
func Start(o Options) (*Proxy, error) {
	if o.ServerName == "" || len(o.Certificate.Certificate) == 0 || o.Upstream == "" || o.Client == nil {
		return nil, errors.New("tokenproxy: ServerName, Certificate, Upstream and Client are required")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{o: o, ln: ln, Port: ln.Addr().(*net.TCPAddr).Port, conns: make(chan net.Conn), done: make(chan struct{})}
	p.URL = fmt.Sprintf("https://127.0.0.1:%d", p.Port)
	p.o.Upstream = strings.TrimRight(o.Upstream, "/")
	p.srv = &http.Server{Handler: http.HandlerFunc(p.serve), ReadHeaderTimeout: 10 * time.Second}
	go p.accept()
	go func() { _ = p.srv.Serve(handshaken{p}) }()
	return p, nil
}

// accept handshakes every connection itself, so refused and failed handshakes are recorded
// with the server name the client asked for; the HTTP server gets the handshaken ones.
func (p *Proxy) accept() {
	for {
		raw, err := p.ln.Accept()
		if err != nil {
			return
		}
		go func() {
			var sni string
			var served bool
			conf := &tls.Config{
				MinVersion: tls.VersionTLS12,
				// Only the proxy's own name gets a certificate. For any other there is none (and no
				// default in Certificates), so the handshake fails: crypto/tls ends it with a fatal
				// unrecognized_name alert.
				GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
					sni = hello.ServerName
					if !strings.EqualFold(hello.ServerName, p.o.ServerName) {
						return nil, nil
					}
					served = true
					return &p.o.Certificate, nil
				},
			}
			tc := tls.Server(raw, conf)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err := tc.HandshakeContext(ctx)
			cancel()
			h := Handshake{SNI: sni, Served: served}
			if err != nil {
				h.Err = err.Error()
			}
			p.mu.Lock()
			p.handshakes = append(p.handshakes, h)
			p.mu.Unlock()
			if err != nil {
				_ = tc.Close()
				return
			}
			select {
			case p.conns <- tc:
			case <-p.done:
				_ = tc.Close()
			}
		}()
	}
}

// handshaken is the listener the HTTP server reads: connections whose TLS handshake succeeded.
type handshaken struct{ p *Proxy }

func (l handshaken) Accept() (net.Conn, error) {
	select {
	case c := <-l.p.conns:
		return c, nil
	case <-l.p.done:
		return nil, net.ErrClosed
	}
}

func (l handshaken) Close() error   { return nil }
func (l handshaken) Addr() net.Addr { return l.p.ln.Addr() }

func (p *Proxy) serve(w http.ResponseWriter, r *http.Request) {
	rec := Request{Host: r.Host, Method: r.Method, PathQuery: r.URL.RequestURI(), ContentType: r.Header.Get("Content-Type")}
	if r.TLS != nil {
		rec.SNI = r.TLS.ServerName
	}
	// The request is recorded before the answer is written, so a client that has its answer
	// finds it in Requests.
	fail := func(status int, msg string) {
		rec.Status = status
		p.record(rec)
		http.Error(w, msg, status)
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil || len(body) > maxBody {
		fail(http.StatusBadRequest, "the request body could not be read or is too large")
		return
	}
	up, err := http.NewRequestWithContext(r.Context(), r.Method, p.o.Upstream+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		fail(http.StatusBadRequest, err.Error())
		return
	}
	for _, h := range []string{"Content-Type", "Accept"} {
		if v := r.Header.Get(h); v != "" {
			up.Header.Set(h, v)
		}
	}
	resp, err := p.o.Client.Do(up)
	if err != nil {
		fail(http.StatusBadGateway, "the token proxy could not reach Entra: "+err.Error())
		return
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		fail(http.StatusBadGateway, "the token proxy could not read Entra's answer: "+err.Error())
		return
	}
	for _, h := range []string{"Content-Type", "Cache-Control", "Pragma"} {
		if v := resp.Header.Get(h); v != "" {
			w.Header().Set(h, v)
		}
	}
	rec.Status = resp.StatusCode
	p.record(rec)
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(answer)
}

func (p *Proxy) record(r Request) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.requests = append(p.requests, r)
}

// Requests returns the requests received so far.
func (p *Proxy) Requests() []Request {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.requests)
}

// Handshakes returns the TLS handshakes seen so far.
func (p *Proxy) Handshakes() []Handshake {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.handshakes)
}

// Close stops serving.
func (p *Proxy) Close() {
	p.once.Do(func() {
		close(p.done)
		_ = p.ln.Close()
		_ = p.srv.Close()
	})
}
