//! The end-to-end suites, one module each, in one test binary (one link instead of one per
//! suite): the real `rethread` binary on port 0 in front of the project's strict fake.

mod bad_day;
mod chains;
mod common;
mod do_no_harm;
mod faults;
mod file_store;
mod goaway;
mod hostile;
mod https;
mod isolation;
mod never_worse;
mod nginx;
mod operations;
mod otel;
mod own_include;
mod packaging;
mod properties;
mod redis;
mod redis_cluster;
mod repair;
mod sdk;
mod shapes_2026;
mod stateless_azure;
mod stateless_images;
mod transparency;
mod upstream_connections;
mod upstream_framing;
mod websocket;
mod wild;
