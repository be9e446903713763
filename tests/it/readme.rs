//! The README's walk-throughs, run as written against the release binary (what
//! `cargo run --release` starts): every `sh` block after a `<!-- readme-test … -->` marker.
//!
//! - `<!-- readme-test: alone [flags] -->`: the block runs by itself on a fresh server
//!   started with those flags.
//! - `<!-- readme-test -->`: the block continues the previous such blocks on one server, in
//!   the README's order, the first of them being the Quick start's (marked `start`), as a
//!   reader following the README on one server would run them.
//!
//! Each command must exit 0. Comment lines right below a command (no blank line between) are
//! its output: they must appear in it as consecutive lines, `…` matching anything. Commands
//! run in one bash per server, so variables (`$JWT`) carry over; `curl` is a function that
//! sends `localhost:8080` to the test server's port and ends a streaming `curl -N` after a
//! second (curl's exit 28, a timeout, then counts as success), since a stream never ends.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::Server;

/// One command of a block and the output lines the README shows for it.
#[derive(Debug)]
struct Step {
    command: String,
    expected: Vec<String>,
}

/// A marked block: the marker's words and its steps.
#[derive(Debug)]
struct Block {
    marker: String,
    line: usize,
    steps: Vec<Step>,
}

fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap()
}

/// The release binary next to the debug one cargo built for the tests.
fn release_binary() -> PathBuf {
    let debug = PathBuf::from(env!("CARGO_BIN_EXE_broker"));
    let target = debug.parent().unwrap().parent().unwrap();
    let release = target.join("release").join("broker");
    assert!(
        release.is_file(),
        "{} is missing: run `cargo build --release --bin broker` (scripts/test.sh does)",
        release.display()
    );
    release
}

fn blocks(text: &str) -> Vec<Block> {
    let lines: Vec<&str> = text.lines().collect();
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some(marker) = lines[i]
            .trim()
            .strip_prefix("<!-- readme-test")
            .and_then(|m| m.strip_suffix("-->"))
        else {
            i += 1;
            continue;
        };
        let marker = marker.trim_start_matches(':').trim().to_owned();
        assert_eq!(
            lines.get(i + 1).map(|l| l.trim()),
            Some("```sh"),
            "README line {}: a readme-test marker must sit right above a ```sh block",
            i + 1
        );
        let start = i + 2;
        let end = (start..lines.len())
            .find(|&j| lines[j].trim() == "```")
            .unwrap_or_else(|| panic!("README line {}: the block never ends", i + 1));
        blocks.push(Block {
            marker,
            line: i + 1,
            steps: steps(&lines[start..end]),
        });
        i = end + 1;
    }
    blocks
}

/// Splits a block into commands (with their `\` continuation lines) and the comment lines
/// right below each; other comments and blank lines are prose.
fn steps(lines: &[&str]) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut i = 0;
    let mut after_command = false;
    while i < lines.len() {
        let line = lines[i];
        if line.trim().is_empty() {
            after_command = false;
        } else if let Some(comment) = line.strip_prefix('#') {
            if after_command {
                let shown = comment.strip_prefix(' ').unwrap_or(comment);
                steps.last_mut().unwrap().expected.push(shown.to_owned());
            }
        } else {
            let mut command = line.to_owned();
            while command.ends_with('\\') && i + 1 < lines.len() {
                i += 1;
                command.push('\n');
                command.push_str(lines[i]);
            }
            steps.push(Step {
                command,
                expected: Vec::new(),
            });
            after_command = true;
        }
        i += 1;
    }
    steps
}

/// Whether `line` is what the README shows, `…` matching any run of characters.
fn matches(shown: &str, line: &str) -> bool {
    let parts: Vec<&str> = shown.split('…').collect();
    if parts.len() == 1 {
        return shown == line;
    }
    let Some(mut rest) = line.strip_prefix(parts[0]) else {
        return false;
    };
    let last = parts.len() - 1;
    for (k, part) in parts.iter().enumerate().skip(1) {
        if k == last {
            return rest.len() >= part.len() && rest.ends_with(part);
        }
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    unreachable!()
}

/// Whether `shown` appears in `output` as consecutive lines.
fn shows(output: &str, shown: &[String]) -> bool {
    let lines: Vec<&str> = output.lines().collect();
    lines.len() >= shown.len()
        && (0..=lines.len() - shown.len()).any(|at| {
            shown
                .iter()
                .zip(&lines[at..])
                .all(|(shown, line)| matches(shown, line))
        })
}

const PRELUDE: &str = r#"
curl() {
  local args=() stream=0 a rc
  for a in "$@"; do
    [ "$a" = -N ] && stream=1
    args+=("${a//localhost:8080/127.0.0.1:$BROKER_PORT}")
  done
  if [ "$stream" = 1 ]; then
    command curl --max-time 1 "${args[@]}"
    rc=$?
    [ "$rc" = 28 ] && return 0
    return "$rc"
  fi
  command curl "${args[@]}"
}
"#;

/// Runs `blocks` in one bash against a fresh release server started with `flags`, and
/// checks every step.
fn run(blocks: &[&Block], flags: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let server =
        Server::start_binary_with_default_secrets(&release_binary(), &dir.path().join("db"), flags);
    let port = server.base.rsplit(':').next().unwrap().to_owned();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let mut script = String::from(PRELUDE);
    let mut all = Vec::new();
    for block in blocks {
        for step in &block.steps {
            let n = all.len();
            script.push_str(&format!(
                "{{ {}\n}} > '{o}/{n}.out' 2> '{o}/{n}.err' < /dev/null; echo $? > '{o}/{n}.rc'\n",
                step.command,
                o = out.display()
            ));
            all.push((block, step));
        }
    }
    let status = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(&work)
        .env("BROKER_PORT", &port)
        .status()
        .unwrap();
    assert!(status.success(), "bash failed: {status}");
    for (n, (block, step)) in all.iter().enumerate() {
        let read = |ext: &str| std::fs::read_to_string(out.join(format!("{n}.{ext}")));
        let rc = read("rc").unwrap_or_default();
        let stdout = read("out").unwrap_or_default();
        let stderr = read("err").unwrap_or_default();
        assert_eq!(
            rc.trim(),
            "0",
            "README block at line {}: `{}` exited {rc}\nstdout: {stdout}\nstderr: {stderr}",
            block.line,
            step.command
        );
        assert!(
            shows(&stdout, &step.expected),
            "README block at line {}: `{}` printed\n{stdout}\nnot what the README shows:\n{}",
            block.line,
            step.command,
            step.expected.join("\n")
        );
    }
}

#[test]
fn the_parser_reads_commands_outputs_and_prose() {
    let text = "x\n<!-- readme-test: alone --a b -->\n```sh\n# prose\ncurl a \\\n  b\n# out 1\n#\n# out …\n\n# prose again\necho hi   # trailing\n```\n";
    let blocks = blocks(text);
    assert_eq!(blocks.len(), 1);
    assert_eq!(blocks[0].marker, "alone --a b");
    let steps = &blocks[0].steps;
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[0].command, "curl a \\\n  b");
    assert_eq!(steps[0].expected, ["out 1", "", "out …"]);
    assert!(steps[1].expected.is_empty());
    assert!(matches(
        "{\"id\":\"…\",\"cursor\":2}",
        "{\"id\":\"0193\",\"cursor\":2}"
    ));
    assert!(!matches(
        "{\"id\":\"…\",\"cursor\":2}",
        "{\"id\":\"0193\",\"cursor\":3}"
    ));
    assert!(matches("a…b…c", "a1b2c"));
    assert!(!matches("a…b…c", "a1b2"));
    assert!(shows(
        "x\nid: 2\nevent: t\n",
        &["id: 2".into(), "event: t".into()]
    ));
    assert!(!shows(
        "id: 2\nx\nevent: t\n",
        &["id: 2".into(), "event: t".into()]
    ));
}

#[test]
#[ignore = "needs the release binary (cargo build --release --bin broker) and oathtool; scripts/test.sh builds and installs them"]
fn every_marked_walk_through_runs_as_written() {
    crate::common::tools::program("curl", "curl");
    crate::common::tools::program("oathtool", "oathtool");
    let text = readme();
    let blocks = blocks(&text);
    let chain: Vec<&Block> = blocks
        .iter()
        .filter(|b| b.marker.is_empty() || b.marker == "start")
        .collect();
    assert_eq!(
        chain.first().map(|b| b.marker.as_str()),
        Some("start"),
        "the first chained block must be the Quick start's, marked `readme-test: start`"
    );
    assert!(chain.len() >= 6, "only {} chained blocks", chain.len());
    run(&chain, &[]);
    let alone: Vec<&Block> = blocks
        .iter()
        .filter(|b| b.marker.starts_with("alone"))
        .collect();
    assert!(alone.len() >= 2, "the two-factor and scopes walk-throughs");
    for block in alone {
        let flags: Vec<&str> = block
            .marker
            .trim_start_matches("alone")
            .split_whitespace()
            .collect();
        run(&[block], &flags);
    }
    // The two-factor walk-through is among them, and computes its code from the URI.
    assert!(text.contains("oathtool --totp -b"));
}
