//! Every link in the documentation resolves, and so does every documentation path that
//! code and manifest comments point at. The README is the entry point and the reference
//! lives in docs/: a renamed page or heading must not leave a dead link behind.
//!
//! Checked, in every file of the repository (build output and the installed tools
//! excepted):
//! - in Markdown files, every relative link `[text](path#anchor)` (inline, image or
//!   reference definition): the path exists, relative to the file; an anchor into a
//!   Markdown file names one of its headings, by GitHub's slug rules;
//! - in every text file, every mention of a `README.md` or of a `docs/*.md` page, with
//!   its `#anchor` if it has one (comments such as "see docs/reliability.md"): the file
//!   exists, relative to the repository root or to the file, and so does the anchor.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Component, Path, PathBuf};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Directories that hold build output, installed tools or git's own data, not the
/// project's files.
const SKIPPED_DIRS: &[&str] = &[".git", ".tools", "target", "node_modules", ".venv"];

/// Every regular file under `dir`, symbolic links not followed.
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let entry = entry.expect("a directory entry");
        let path = entry.path();
        let kind = fs::symlink_metadata(&path).expect("metadata").file_type();
        let name = entry.file_name();
        if kind.is_dir() {
            if !SKIPPED_DIRS.iter().any(|s| name == *s) {
                files(&path, out);
            }
        } else if kind.is_file() {
            out.push(path);
        }
    }
}

/// The text with the contents of fenced code blocks and inline code spans replaced by
/// blanks (line breaks kept, so line numbers stay right): links and headings there are
/// examples, not links.
fn without_code(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut fence: Option<(char, usize)> = None;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let marker = trimmed.chars().next().filter(|c| *c == '`' || *c == '~');
        let run = marker.map_or(0, |m| trimmed.chars().take_while(|c| *c == m).count());
        match (fence, marker) {
            (None, Some(m)) if run >= 3 => {
                fence = Some((m, run));
                out.push('\n');
                continue;
            }
            (Some((m, n)), Some(c)) if c == m && run >= n && trimmed[run..].trim().is_empty() => {
                fence = None;
                out.push('\n');
                continue;
            }
            _ => {}
        }
        if fence.is_some() {
            if line.ends_with('\n') {
                out.push('\n');
            }
            continue;
        }
        out.push_str(&without_code_spans(line));
    }
    out
}

/// One line with the contents of its code spans blanked (a run of N backticks opens a
/// span that the next run of exactly N backticks closes).
fn without_code_spans(line: &str) -> String {
    let chars: Vec<char> = line.chars().collect();
    let mut out = String::with_capacity(line.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '`' {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        let n = chars[i..].iter().take_while(|c| **c == '`').count();
        let mut j = i + n;
        let mut close = None;
        while j < chars.len() {
            if chars[j] == '`' {
                let m = chars[j..].iter().take_while(|c| **c == '`').count();
                if m == n {
                    close = Some(j);
                    break;
                }
                j += m;
            } else {
                j += 1;
            }
        }
        match close {
            Some(j) => {
                out.extend(std::iter::repeat_n('`', n));
                out.extend(std::iter::repeat_n(' ', j - i - n));
                out.extend(std::iter::repeat_n('`', n));
                i = j + n;
            }
            None => {
                out.extend(std::iter::repeat_n('`', n));
                i += n;
            }
        }
    }
    out
}

/// GitHub's anchor for a heading's text: the rendered text (markup removed) in lower
/// case, every character that is not a letter, a digit, a blank, `-` or `_` dropped,
/// blanks turned into `-`.
fn slug(heading: &str) -> String {
    let mut rendered = String::new();
    let mut rest = heading;
    // A link renders as its text.
    while let Some(open) = rest.find('[') {
        rendered.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        match after.find("](").and_then(|close| {
            after[close + 2..]
                .find(')')
                .map(|end| (close, close + 2 + end + 1))
        }) {
            Some((close, end)) => {
                rendered.push_str(&after[..close]);
                rest = &after[end..];
            }
            None => {
                rendered.push('[');
                rest = after;
            }
        }
    }
    rendered.push_str(rest);
    rendered
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a Markdown file's headings (ATX headings outside code blocks), with
/// GitHub's `-1`, `-2`, ... for repeated ones.
fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = BTreeSet::new();
    let blanked = without_code(markdown);
    // A heading is found in the blanked text (so that none inside a code block counts)
    // and named by its original text (whose code spans keep their words).
    for (line, original) in blanked.lines().zip(markdown.lines()) {
        let trimmed = line.trim_start();
        if line.len() - trimmed.len() > 3 {
            continue;
        }
        let level = trimmed.chars().take_while(|c| *c == '#').count();
        if !(1..=6).contains(&level) {
            continue;
        }
        let after = &trimmed[level..];
        if !(after.is_empty() || after.starts_with(' ') || after.starts_with('\t')) {
            continue;
        }
        let title = original.trim_start()[level..]
            .trim()
            .trim_end_matches('#')
            .trim_end();
        let base = slug(title);
        let n = seen.entry(base.clone()).or_insert(0);
        let anchor = if *n == 0 {
            base.clone()
        } else {
            format!("{base}-{n}")
        };
        *n += 1;
        out.insert(anchor);
    }
    out
}

/// The destinations of a Markdown file's links, with their line numbers: inline links
/// and images `[text](dest "title")` and reference definitions `[label]: dest`.
fn markdown_links(markdown: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for (n, line) in without_code(markdown).lines().enumerate() {
        let mut rest = line;
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            let mut depth = 0usize;
            let mut end = after.len();
            for (j, c) in after.char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' if depth == 0 => {
                        end = j;
                        break;
                    }
                    ')' => depth -= 1,
                    _ => {}
                }
            }
            out.push((n + 1, destination(&after[..end])));
            rest = &after[end.min(after.len())..];
        }
        let t = line.trim_start();
        if line.len() - t.len() <= 3 && t.starts_with('[') {
            if let Some(close) = t.find("]:") {
                out.push((n + 1, destination(&t[close + 2..])));
            }
        }
    }
    out
}

/// A link destination without its angle brackets and title.
fn destination(raw: &str) -> String {
    let raw = raw.trim();
    if let Some(inner) = raw.strip_prefix('<') {
        return inner.split('>').next().unwrap_or_default().to_string();
    }
    raw.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

fn is_external(dest: &str) -> bool {
    dest.contains("://") || dest.starts_with("mailto:") || dest.is_empty()
}

/// Mentions of a `README.md` or of a `docs/*.md` page in any text, with their line
/// numbers: (path, anchor).
fn doc_mentions(text: &str) -> Vec<(usize, String, Option<String>)> {
    let is_path = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-');
    let is_anchor = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-');
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let mut from = 0;
        while let Some(i) = line[from..].find(".md") {
            let end = from + i + 3;
            from = end;
            if line[end..].chars().next().is_some_and(is_anchor) {
                continue; // `.mdx`, `.md_x`: not a Markdown file
            }
            let start = line[..end]
                .char_indices()
                .rev()
                .take_while(|(_, c)| is_path(*c))
                .last()
                .map_or(end, |(j, _)| j);
            let path = &line[start..end];
            // A URL's path (`https://host/x/README.md`) is another site's.
            if path.starts_with('/') || line[..start].ends_with(':') {
                continue;
            }
            let plain = path.trim_start_matches("./").trim_start_matches("../");
            let is_doc = path.rsplit('/').next() == Some("README.md")
                || (plain.starts_with("docs/") || path.contains("/docs/"));
            if !is_doc {
                continue;
            }
            let anchor = line[end..]
                .strip_prefix('#')
                .map(|a| a.chars().take_while(|c| is_anchor(*c)).collect::<String>());
            let anchor = anchor.filter(|a| !a.is_empty());
            if let Some(a) = &anchor {
                from = end + 1 + a.len();
            }
            out.push((n + 1, path.to_string(), anchor));
        }
    }
    out
}

/// `dir/relative` with `.` and `..` resolved, without touching the file system.
fn join(dir: &Path, relative: &str) -> PathBuf {
    let mut out = PathBuf::new();
    for part in dir.join(relative).components() {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// What is wrong with a link from `file` to `target` (a path that should exist) and
/// `anchor`; `None` when it resolves.
fn problem(target: &Path, anchor: Option<&str>, cache: &mut AnchorCache) -> Option<String> {
    if !target.exists() {
        return Some(format!("{} does not exist", target.display()));
    }
    let anchor = anchor.filter(|a| !a.is_empty())?;
    if target.extension().is_none_or(|e| e != "md") {
        return None; // an anchor into source code: a line number, not checked
    }
    let known = cache.of(target);
    if known.contains(anchor) {
        None
    } else {
        Some(format!(
            "{} has no heading with the anchor #{anchor}",
            target.display()
        ))
    }
}

#[derive(Default)]
struct AnchorCache(HashMap<PathBuf, BTreeSet<String>>);

impl AnchorCache {
    fn of(&mut self, file: &Path) -> &BTreeSet<String> {
        self.0.entry(file.to_path_buf()).or_insert_with(|| {
            anchors(&fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display())))
        })
    }
}

/// Every problem in one file's links and documentation mentions, and how many of each
/// it checked.
fn check_file(
    root: &Path,
    file: &Path,
    text: &str,
    cache: &mut AnchorCache,
) -> (Vec<String>, usize, usize) {
    let dir = file.parent().expect("a file has a directory");
    let shown = file
        .strip_prefix(root)
        .unwrap_or(file)
        .display()
        .to_string();
    let mut problems = Vec::new();
    let mut links = 0;
    if file.extension().is_some_and(|e| e == "md") {
        for (line, dest) in markdown_links(text) {
            if is_external(&dest) {
                continue;
            }
            links += 1;
            let (path, anchor) = match dest.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (dest.as_str(), None),
            };
            let outcome = if path.is_empty() {
                // An anchor into this file, checked against the text being checked.
                let anchor = anchor.unwrap_or_default();
                (!anchors(text).contains(anchor))
                    .then(|| format!("this file has no heading with the anchor #{anchor}"))
            } else {
                problem(&join(dir, path), anchor, cache)
            };
            if let Some(p) = outcome {
                problems.push(format!("{shown}:{line}: link ({dest}): {p}"));
            }
        }
    }
    let mentions = doc_mentions(text);
    for (line, path, anchor) in &mentions {
        let relative = path.starts_with("./") || path.starts_with("../");
        let candidates = if relative {
            vec![join(dir, path)]
        } else {
            vec![join(root, path), join(dir, path)]
        };
        let found = candidates.iter().find(|c| c.exists());
        let outcome = match found {
            Some(target) => problem(target, anchor.as_deref(), cache),
            None => Some(format!("{path} does not exist")),
        };
        if let Some(p) = outcome {
            let anchor = anchor
                .as_deref()
                .map(|a| format!("#{a}"))
                .unwrap_or_default();
            problems.push(format!("{shown}:{line}: mention of {path}{anchor}: {p}"));
        }
    }
    (problems, links, mentions.len())
}

#[test]
fn every_relative_link_and_every_doc_path_mentioned_resolves() {
    let root = repo_root();
    let mut all = Vec::new();
    files(&root, &mut all);
    all.sort();
    let mut cache = AnchorCache::default();
    let (mut problems, mut links, mut mentions, mut markdown) = (Vec::new(), 0, 0, 0);
    for file in &all {
        let Ok(text) = fs::read_to_string(file) else {
            continue; // not text
        };
        if file.extension().is_some_and(|e| e == "md") {
            markdown += 1;
        }
        let (p, l, m) = check_file(&root, file, &text, &mut cache);
        problems.extend(p);
        links += l;
        mentions += m;
    }
    assert!(
        problems.is_empty(),
        "{} broken links or documentation paths:\n{}",
        problems.len(),
        problems.join("\n")
    );
    eprintln!(
        "{markdown} Markdown files, {links} relative links, {mentions} documentation paths checked"
    );
    // Guards against a checker that silently finds nothing to check.
    assert!(
        markdown >= 15,
        "only {markdown} Markdown files found under {}",
        root.display()
    );
    assert!(links >= 80, "only {links} relative links checked");
    assert!(
        mentions >= 50,
        "only {mentions} documentation paths checked"
    );
    for page in [
        "README.md",
        "docs/README.md",
        "docs/configuration.md",
        "docs/metrics.md",
        "docs/cli.md",
        "docs/grpc.md",
        "docs/pick-mode.md",
        "docs/reliability.md",
        "docs/performance.md",
    ] {
        assert!(root.join(page).is_file(), "{page} is missing");
    }
}

#[test]
fn slugs_follow_githubs_rules() {
    assert_eq!(
        slug("When the VM fails: `failure_policy`"),
        "when-the-vm-fails-failure_policy"
    );
    assert_eq!(slug("6. Read the metrics"), "6-read-the-metrics");
    assert_eq!(
        slug("With Flagger or Argo Rollouts: pick mode"),
        "with-flagger-or-argo-rollouts-pick-mode"
    );
    assert_eq!(
        slug("A bad config never becomes a 500"),
        "a-bad-config-never-becomes-a-500"
    );
    assert_eq!(slug("The `.wasm`"), "the-wasm");
    assert_eq!(slug("Ramps → the guard"), "ramps--the-guard");
    assert_eq!(slug("See [the CLI](cli.md) here"), "see-the-cli-here");
}

#[test]
fn anchors_count_repeats_and_ignore_code_blocks() {
    let page = "# Title\n\n## Usage\n\n```sh\n# not a heading\n```\n\n## Usage\n\n    ## indented code\n#no-blank\n### `make test`\n";
    let got: Vec<String> = anchors(page).into_iter().collect();
    assert_eq!(got, ["make-test", "title", "usage", "usage-1"]);
}

#[test]
fn links_in_code_are_not_links() {
    let page = "see [a](one.md) and `[b](two.md)`\n```\n[c](three.md)\n```\n[d]: four.md \"title\"\n[e](<five six.md>) [f](http://x/y.md)\n";
    let got: Vec<String> = markdown_links(page).into_iter().map(|(_, d)| d).collect();
    assert_eq!(got, ["one.md", "four.md", "five six.md", "http://x/y.md"]);
}

#[test]
fn mentions_in_comments_are_found_with_their_anchors() {
    // Built at run time: the file itself is checked, and this page does not exist.
    let missing = format!("{}/x.md", "docs");
    let text = format!(
        "// see docs/cli.md#exit-codes and istio/README.md.\n# ({missing}) https://h/p/README.md notes.mdx\n"
    );
    let got = doc_mentions(&text);
    assert_eq!(
        got,
        [
            (1, "docs/cli.md".to_string(), Some("exit-codes".to_string())),
            (1, "istio/README.md".to_string(), None),
            (2, missing, None),
        ]
    );
}

/// The checker fails on what it must catch: a missing file, a missing anchor in another
/// page and in the same page, a mention of a page that does not exist.
#[test]
fn broken_links_and_mentions_are_reported() {
    let root = repo_root();
    let mut cache = AnchorCache::default();
    let page = root.join("docs").join("a-page-for-this-test.md");
    // The broken mentions are built at run time: this file itself is checked.
    let docs = "docs";
    let text = format!(
        "# Here\n\n[ok](#here) [ok](cli.md#exit-codes) [ok](../README.md)\n\
         [gone](nowhere.md) [gone](cli.md#no-such-heading) [gone](#not-here)\n\
         see {docs}/no-such-page.md and {docs}/cli.md#no-such-heading\n"
    );
    let (problems, links, mentions) = check_file(&root, &page, &text, &mut cache);
    assert_eq!((links, mentions), (6, 3), "{problems:?}");
    assert_eq!(problems.len(), 5, "{problems:#?}");
    for (problem, want) in problems.iter().zip([
        "link (nowhere.md)".to_string(),
        "link (cli.md#no-such-heading)".to_string(),
        "link (#not-here)".to_string(),
        format!("mention of {docs}/no-such-page.md"),
        format!("mention of {docs}/cli.md#no-such-heading"),
    ]) {
        assert!(problem.contains(&want), "{problem} should be about {want}");
    }
}
