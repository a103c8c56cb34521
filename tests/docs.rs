//! The repository stands alone: the protocol is `docs/protocol.md`, every citation of it
//! in the code names a section it has, no file points to a contract outside the
//! repository, and the examples of its signing section are right.

use std::fs;
use std::path::{Path, PathBuf};

/// The repository's root.
fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn protocol() -> String {
    fs::read_to_string(repo().join("docs/protocol.md")).expect("docs/protocol.md exists")
}

/// Every text file of the repository, outside build output and version control.
fn text_files(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if name == ".git" || name == "target" || name == "corpus" || name == "artifacts" {
            continue;
        }
        match entry.file_type() {
            Ok(kind) if kind.is_dir() => text_files(&path, out),
            Ok(kind) if kind.is_file() => {
                if let Ok(text) = fs::read_to_string(&path) {
                    out.push((path, text));
                }
            }
            _ => {}
        }
    }
}

#[test]
fn no_file_points_to_a_protocol_outside_the_repository() {
    // Spelled in two halves so that this file does not find itself.
    let needles = [concat!("PROTOCOL", ".md"), concat!("shared", "/PROTOCOL")];
    let mut files = Vec::new();
    text_files(&repo(), &mut files);
    assert!(files.len() > 50, "only {} files found", files.len());
    let mut found = Vec::new();
    for (path, text) in &files {
        for (number, line) in text.lines().enumerate() {
            if needles.iter().any(|needle| line.contains(needle)) {
                let path = path.strip_prefix(repo()).unwrap_or(path);
                found.push(format!(
                    "{}:{}: {}",
                    path.display(),
                    number + 1,
                    line.trim()
                ));
            }
        }
    }
    assert!(
        found.is_empty(),
        "the protocol of this repository is docs/protocol.md; these lines point elsewhere:\n{}",
        found.join("\n")
    );
}

#[test]
fn every_section_the_code_cites_exists() {
    let protocol = protocol();
    let sections: Vec<u32> = protocol
        .lines()
        .filter_map(|line| line.strip_prefix("## "))
        .filter_map(|title| title.split_once('.'))
        .filter_map(|(number, _)| number.parse().ok())
        .collect();
    let count = u32::try_from(sections.len()).expect("a few sections");
    assert!(count >= 10, "sections 1 to 10 at least: {sections:?}");
    assert_eq!(
        sections,
        (1..=count).collect::<Vec<u32>>(),
        "numbered in order"
    );
    let mut files = Vec::new();
    for dir in ["src", "tests", "package", "cross"] {
        text_files(&repo().join(dir), &mut files);
    }
    let mut cited = 0;
    for (path, text) in &files {
        for line in text.lines() {
            for (at, _) in line.match_indices("docs/protocol.md") {
                let rest = line[at + "docs/protocol.md".len()..].trim_start();
                let rest = rest
                    .strip_prefix("section")
                    .or_else(|| rest.strip_prefix('§'))
                    .map(str::trim_start);
                let Some(rest) = rest else { continue };
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                let Ok(number) = digits.parse::<u32>() else {
                    continue;
                };
                cited += 1;
                assert!(
                    sections.contains(&number),
                    "{} cites docs/protocol.md section {number}, which does not exist: {line}",
                    path.display()
                );
            }
        }
    }
    assert!(cited > 10, "only {cited} citations found");
}

#[test]
fn the_errcode_table_lists_every_errcode_the_agent_sends() {
    use bootagent::jobs::ErrCode;
    let protocol = protocol();
    for code in [
        ErrCode::Success,
        ErrCode::Invalid,
        ErrCode::DownloadFailed,
        ErrCode::ChecksumMismatch,
        ErrCode::BadPackage,
        ErrCode::InstallFailed,
        ErrCode::StartFailed,
        ErrCode::NoSuchAgent,
        ErrCode::Internal,
    ] {
        let row = format!("| {} | ", code as u32);
        assert!(
            protocol.lines().any(|line| line.starts_with(&row)),
            "docs/protocol.md has no errcode row for {code:?}"
        );
    }
}

#[test]
fn the_signed_request_example_carries_a_signature_that_checks() {
    let protocol = protocol();
    let field = |name: &str| {
        protocol
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} line in the example"))
            .trim()
            .to_string()
    };
    let timestamp: i64 = field("X-Boot-Timestamp: ").parse().expect("a timestamp");
    let signature = field("X-Boot-Signature: ");
    let length: usize = protocol
        .lines()
        .skip_while(|line| !line.starts_with("X-Boot-Signature: "))
        .find_map(|line| line.strip_prefix("Content-Length: "))
        .and_then(|n| n.trim().parse().ok())
        .expect("a Content-Length after the signature");
    let body = protocol
        .lines()
        .skip_while(|line| !line.starts_with("X-Boot-Signature: "))
        .find(|line| line.starts_with('{'))
        .expect("the signed body");
    assert_eq!(body.len(), length, "Content-Length of the example");
    assert!(protocol.contains("with `secret` = `s3cr3t`"));
    let expected =
        bootagent::sign::signature(b"s3cr3t", timestamp, "/agent/status", body.as_bytes());
    assert_eq!(signature, expected, "the example's signature");
}

#[test]
fn ci_installs_exactly_what_the_readme_says_the_tests_need() {
    let packages = |text: &str, after: &str| -> Vec<String> {
        let mut words: Vec<String> = text
            .split(after)
            .nth(1)
            .unwrap_or_else(|| panic!("no {after:?}"))
            .lines()
            .scan(true, |more, line| {
                let take = *more;
                *more = line.trim_end().ends_with('\\');
                take.then_some(line)
            })
            .flat_map(str::split_whitespace)
            .filter(|word| !word.starts_with('-') && *word != "\\" && !word.starts_with('>'))
            .map(String::from)
            .collect();
        words.retain(|word| word != "install");
        words.sort();
        words
    };
    let readme = fs::read_to_string(repo().join("README.md")).expect("README.md");
    let ci = fs::read_to_string(repo().join(".ci/run")).expect(".ci/run");
    let from_readme = packages(&readme, "```sh\napt-get install");
    let from_ci = packages(
        &ci,
        "# What `cargo test` needs besides Rust: exactly the list of README.md.\n",
    );
    let from_ci: Vec<String> = from_ci
        .into_iter()
        .filter(|word| !["DEBIAN_FRONTEND=noninteractive", "apt-get"].contains(&word.as_str()))
        .collect();
    assert!(
        from_readme.contains(&"python3-pyftpdlib".to_string()),
        "{from_readme:?}"
    );
    assert_eq!(
        from_ci, from_readme,
        ".ci/run and README.md list different packages"
    );
}
