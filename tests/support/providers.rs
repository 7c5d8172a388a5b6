//! The mock providers of the tests: the library's one set of mocks
//! (`authproxy::demo::mocks`, shared with the demo and the benchmarks),
//! under the names the tests have always used. See that module for the
//! provider styles and their knobs.
// Each test binary uses some of these.
#![allow(unused_imports)]

pub use authproxy::demo::mocks::{
    now, ApiHit, ClientAuthRule, ExpiresIn, MockProvider, MockState, Style, TokenRequest,
    CLIENT_ID, CLIENT_SECRET, PASSWORD, USERNAME,
};
