//! Integration tests: the real router on a random port, mock upstreams on 127.0.0.1.

mod auth;
mod headers;
mod helpers;
mod providers;
mod validation;
