//! The end-to-end tests' library: the harness (a private containerd,
//! offline OCI images, leak checks; `idshift-harness`, which the benchmark
//! and the demo use too) and the CRI client of the CRI suites.

pub mod cri;

pub use idshift_harness::*;

/// Runs a test function `fn name()` on each containerd listed:
/// `on_containerd!(name: V1_6, V1_7, V2);` makes a module `name` of tests
/// `containerd_1_6`, `containerd_1_7`, `containerd_2_x`, each calling
/// `name` within [`Flavour::run`], so that the containerds it starts
/// (`Containerd::start` without a flavour) are that one (`cargo test name`
/// runs them all, `cargo test 2_x` every 2.x test).
#[macro_export]
macro_rules! on_containerd {
    ($name:ident: $($flavour:ident),+ $(,)?) => {
        mod $name {
            $( $crate::on_containerd!(@one $name $flavour); )+
        }
    };
    (@one $name:ident V1_6) => {
        #[test]
        fn containerd_1_6() {
            $crate::Flavour::V1_6.run(super::$name)
        }
    };
    (@one $name:ident V1_7) => {
        #[test]
        fn containerd_1_7() {
            $crate::Flavour::V1_7.run(super::$name)
        }
    };
    (@one $name:ident V2) => {
        #[test]
        fn containerd_2_x() {
            $crate::Flavour::V2.run(super::$name)
        }
    };
}
