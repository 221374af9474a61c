//! Shared support code for the integration tests.
//!
//! Every test binary that declares `mod support;` compiles this module on its
//! own and uses only part of it, hence the `dead_code` allowance. This is test
//! code, so panicking on broken test setup (`expect`) is intended.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used, clippy::panic)]

pub mod env;
pub mod fake_azure;
pub mod kube_api;
pub mod leaks;
pub mod provider;
pub mod tls_server;
pub mod token_proxy;
