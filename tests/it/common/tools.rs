//! Tools the tests drive that cargo does not build: Node.js and the npm packages of
//! `tests/js` and `clients/js`, Chromium, pebble and nats-server.
//!
//! A test that needs one is marked `#[ignore = "needs …"]`. A plain `cargo nextest run` (or
//! `cargo test`) therefore counts it as skipped in its summary instead of passing it
//! silently, and `scripts/test.sh`, which installs the tools, runs every test with
//! `--run-ignored all`. Run that way, a missing tool fails the test with the command that
//! installs it: no test ever skips itself.

use std::path::PathBuf;
use std::process::Command;

fn missing(what: &str, install: &str) -> ! {
    panic!("{what} is missing: {install} (scripts/test.sh installs it)")
}

/// The repository directory `rel` after checking that its `node_modules` holds `packages`.
pub fn npm_packages(rel: &str, packages: &[&str]) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel);
    for package in packages {
        if !dir.join("node_modules").join(package).is_dir() {
            missing(
                &format!("{rel}/node_modules/{package}"),
                &format!("run `npm ci` in {rel}"),
            );
        }
    }
    dir
}

/// The Chromium binary (`$BROKER_CHROMIUM`, else Debian's `/usr/bin/chromium`).
pub fn chromium() -> PathBuf {
    let path = std::env::var_os("BROKER_CHROMIUM")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from);
    if !path.is_file() {
        missing(
            &format!("Chromium at {}", path.display()),
            "apt-get install chromium",
        );
    }
    path
}

/// The nats-server binary.
pub fn nats_server() -> PathBuf {
    ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .or_else(|| {
            Command::new("nats-server")
                .arg("--version")
                .output()
                .ok()
                .map(|_| PathBuf::from("nats-server"))
        })
        .unwrap_or_else(|| missing("nats-server", "apt-get install nats-server"))
}

/// Checks that pebble (the ACME test server) is on the PATH.
pub fn pebble() {
    if Command::new("pebble").arg("-help").output().is_err() {
        missing("pebble", "apt-get install pebble");
    }
}

/// Checks that `program` (a command-line tool the test runs, such as `oathtool` or `curl`)
/// is on the PATH; `package` is the Debian package that provides it.
pub fn program(program: &str, package: &str) {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()));
    if !found {
        missing(program, &format!("apt-get install {package}"));
    }
}
