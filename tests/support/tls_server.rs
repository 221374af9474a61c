//! A TLS HTTP/1.1 server on 127.0.0.1 for the fakes of this folder: its own thread and runtime,
//! one handler for every request (given the TLS server name the client sent), stopped when
//! dropped.

use http_body_util::Full;
use hyper::{Request, Response, body::Bytes, body::Incoming};
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use std::{convert::Infallible, future::Future, sync::Arc};
use tokio::sync::oneshot;
use tokio_rustls::TlsAcceptor;

/// The running server.
pub struct TlsServer {
    /// Port on 127.0.0.1.
    pub port: u16,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TlsServer {
    /// Serves `config` on a free port; `handler(sni, request)` answers every request.
    pub async fn start<H, F>(config: rustls::ServerConfig, handler: H) -> Self
    where
        H: Fn(String, Request<Incoming>) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
    {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("non-blocking");
        let port = listener.local_addr().expect("addr").port();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let _ = ready_tx.send(());
                let accept = async {
                    loop {
                        let Ok((tcp, _)) = listener.accept().await else {
                            continue;
                        };
                        let (acceptor, handler) = (acceptor.clone(), handler.clone());
                        tokio::spawn(async move {
                            let Ok(tls) = acceptor.accept(tcp).await else {
                                return;
                            };
                            let sni = tls.get_ref().1.server_name().unwrap_or("").to_owned();
                            let service = hyper::service::service_fn(move |req| {
                                let answer = handler(sni.clone(), req);
                                async move { Ok::<_, Infallible>(answer.await) }
                            });
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(tls), service)
                                .await;
                        });
                    }
                };
                tokio::select! {
                    _ = shutdown_rx => {}
                    () = accept => {}
                }
            });
        });
        ready_rx.await.expect("TLS server started");
        Self {
            port,
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
        }
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A self-signed test CA named `common_name`, for signing the fakes' server certificates.
pub fn test_ca(common_name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    CertifiedIssuer::self_signed(ca_params, ca_key).expect("self-sign CA")
}
