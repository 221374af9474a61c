//! akv-csi-provider: an Azure Key Vault provider for the Kubernetes Secrets Store CSI Driver.
//!
//! Data flows one way: a Mount request is parsed into a [`mount::MountPlan`] (with [`spc`]),
//! an identity is turned into a credential ([`auth`]), objects are read from Key Vault
//! ([`keyvault`]), converted into files ([`convert`]) and answered by [`grpc`].
//!
//! Two subcommands reuse that path: [`agent`] (the standalone agent with its own rotation loop)
//! and [`validate`] (offline SecretProviderClass checks).

pub mod admin;
pub mod agent;
pub mod auth;
// The build script's commit rules, tested here (build.rs has no test harness).
#[cfg(test)]
#[path = "../build_info.rs"]
mod build_info;
pub mod cli;
pub mod cloud;
pub mod compat;
pub mod convert;
#[cfg(any(fuzzing, test))]
pub mod fuzz;
pub mod grpc;
pub mod hardening;
pub mod keyvault;
pub mod metrics;
pub mod mount;
pub mod review;
pub mod sensitive;
pub mod server;
pub mod shutdown;
pub mod spc;
pub mod telemetry;
pub mod text;
pub mod transport;
pub mod validate;
pub mod wiring;

/// Generated gRPC types of the driver's `v1alpha1` provider API.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1alpha1 {
    tonic::include_proto!("v1alpha1");
}

/// The runtime name reported by `Version`.
pub const RUNTIME_NAME: &str = "akv-csi-provider";
/// The crate's semantic version, reported by `Version` and `--version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git commit the binary was built from (`unknown` outside a git checkout).
pub const GIT_COMMIT: &str = env!("AKV_GIT_COMMIT");
/// The build date, RFC 3339.
pub const BUILD_DATE: &str = env!("AKV_BUILD_DATE");
