//! End to end: plain `http://` through an HTTP proxy goes in absolute form, never
//! through `CONNECT` (docs/protocol.md section 1), for the exchanges with the server
//! and for package downloads; the lowercase variables work; only `NO_PROXY` exempts a
//! host, loopback included.

mod common;

use common::host::{sha256, tgz, Host};
use common::proxy::ForwardProxy;
use common::*;
use serde_json::json;

const RUN: &[u8] = b"#!/bin/sh\nexec sleep 1000\n";

/// Registers and installs a package through the proxy given by `var`.
fn through_proxy(var: &str, name: &str) {
    let proxy = ForwardProxy::start();
    let url = proxy.url();
    let host = Host::with_env(Scratch::new(name), &[], &[(var, url.as_str())]);
    let server = host.server.addr();
    let lines = proxy.lines();
    assert!(
        lines
            .iter()
            .any(|l| *l == format!("POST http://{server}/agent/register HTTP/1.1")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| *l == format!("POST http://{server}/agent/status HTTP/1.1")),
        "{lines:?}"
    );
    let headers = proxy.headers();
    assert!(
        headers
            .iter()
            .any(|h| h.eq_ignore_ascii_case(&format!("host: {server}"))),
        "{headers:?}"
    );

    let package = tgz(&host.files.join("viaproxy-1.tgz"), &[("run", 0o755, RUN)]);
    host.send(json!({"id": "p1", "action": "install", "name": "viaproxy",
                     "url": host.url(&package), "checksum": sha256(&package)}));
    let result = host.result("p1", DEADLINE);
    assert_eq!(result["errcode"], 0, "{result}");
    let lines = proxy.lines();
    assert!(
        lines
            .iter()
            .any(|l| *l == format!("GET http://{server}/files/viaproxy-1.tgz HTTP/1.1")),
        "{lines:?}"
    );
    assert!(
        !lines.iter().any(|l| l.starts_with("CONNECT")),
        "tunnelled: {lines:?}"
    );
}

#[test]
fn plain_http_goes_through_the_proxy_in_absolute_form() {
    through_proxy("HTTP_PROXY", "proxy-upper");
}

#[test]
fn the_lowercase_variable_works_the_same() {
    through_proxy("http_proxy", "proxy-lower");
}

#[test]
fn all_proxy_serves_plain_http_too() {
    through_proxy("ALL_PROXY", "proxy-all");
}

#[test]
fn no_proxy_exempts_a_host_and_https_proxy_does_not_apply_to_http() {
    let proxy = ForwardProxy::start();
    let url = proxy.url();
    let host = Host::with_env(
        Scratch::new("proxy-exempt"),
        &[],
        &[
            ("HTTP_PROXY", url.as_str()),
            ("NO_PROXY", "example.com,127.0.0.1"),
        ],
    );
    wait_registered(&host.data());
    let https_only = Host::with_env(
        Scratch::new("proxy-https-only"),
        &[],
        &[("HTTPS_PROXY", url.as_str())],
    );
    wait_registered(&https_only.data());
    assert_eq!(proxy.lines(), Vec::<String>::new());
}
