//! The end-to-end tests' library: the harness (a private containerd,
//! offline OCI images, leak checks; `idshift-harness`, which the benchmark
//! and the demo use too) and the CRI client of the CRI suites.

pub mod cri;

pub use idshift_harness::*;
