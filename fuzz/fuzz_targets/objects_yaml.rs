//! Fuzz target: see `akv_csi_provider::fuzz::objects_yaml` for the input format and the invariants.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| akv_csi_provider::fuzz::objects_yaml(data));
