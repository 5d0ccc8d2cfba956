//! No import circle among the modules of the filter crate (src/) or the core
//! (core/src/): tools/import_circles.py, run on the repository, and on a small tree
//! with a circle made on purpose, which it must find.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn import_circles(root: &Path) -> (bool, String) {
    let out = Command::new("python3")
        .arg(repo_root().join("tools/import_circles.py"))
        .arg(root)
        .output()
        .expect("python3 runs tools/import_circles.py");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn src_and_core_have_no_import_circle() {
    let (ok, report) = import_circles(&repo_root());
    assert!(ok, "import circles:\n{report}");
    // It read both crates, not an empty tree.
    for crate_dir in ["src:", "core/src:"] {
        let line = report
            .lines()
            .find(|l| l.starts_with(crate_dir))
            .unwrap_or_else(|| panic!("no line for {crate_dir} in:\n{report}"));
        let files: usize = line
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .expect("a file count");
        assert!(files > 5, "{line}");
    }
}

#[test]
fn a_circle_through_a_parent_module_is_found() {
    let dir = std::env::temp_dir().join(format!("import-circles-{}", std::process::id()));
    let src = dir.join("src");
    fs::create_dir_all(src.join("config")).unwrap();
    fs::write(src.join("lib.rs"), "mod config;\nmod pick;\n").unwrap();
    // config/mod.rs declares hash; hash imports pick; pick imports config back.
    fs::write(src.join("config/mod.rs"), "mod hash;\npub struct Config;\n").unwrap();
    fs::write(src.join("config/hash.rs"), "use crate::pick::Limit;\n").unwrap();
    fs::write(
        src.join("pick.rs"),
        "use crate::config::Config;\npub struct Limit;\n",
    )
    .unwrap();
    let (ok, report) = import_circles(&dir);
    fs::remove_dir_all(&dir).unwrap();
    assert!(!ok, "the circle was not found:\n{report}");
    assert!(
        report.contains("circle: src/config/hash.rs src/config/mod.rs src/pick.rs"),
        "{report}"
    );
}
