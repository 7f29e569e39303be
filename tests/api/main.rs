//! The REST API against API.md, end to end: a real node, real HTTP, a real
//! database. One module per resource; every test is written once, taking a
//! `&TestApp`, and [`on_both_backends!`] runs it on both backends:
//! `<resource>::sqlite::<name>` always, `<resource>::postgres::<name>` when
//! asked for with `--ignored` (CI has a PostgreSQL server).

#[path = "../common/mod.rs"]
mod common;

/// Instantiates each named test (a `fn(&TestApp)` of the calling module)
/// for both backends: `mod sqlite { #[test] fn name() }` and
/// `mod postgres { #[test] #[ignore] fn name() }`.
macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $test() {
                    super::$test(&crate::common::TestApp::sqlite());
                }
            )*
        }

        mod postgres {
            $(
                #[test]
                #[ignore = "needs PostgreSQL (TEST_DATABASE_URL or 127.0.0.1:5432); CI runs it"]
                fn $test() {
                    super::$test(&crate::common::TestApp::postgres());
                }
            )*
        }
    };
}

mod auth;
mod events;
mod faults;
mod http;
mod issues;
mod messages;
mod openapi;
mod reactions;
mod upvotes;
mod users;
