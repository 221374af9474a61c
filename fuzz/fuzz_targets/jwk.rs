//! Fuzz target: see `akv_csi_provider::fuzz::jwk` for the input format and the invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| akv_csi_provider::fuzz::jwk(data));
