//! The house rules of the code (README, "How the code is laid out"), checked from the
//! source: a module may use the layers below it, never one above, and the module graph
//! has no loop. Read from every `crate::` path outside comments, so that a reach upward
//! written inline counts as much as one in a `use` line.
//!
//! Run alone with `cargo test --test integration layers -- --nocapture` to see the graph's
//! edges that break a rule.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top to bottom. A file's layer is its first path component under `src/` (the leaves
/// share the last one). Keep in step with the README's table.
const LAYERS: &[&[&str]] = &[
    &["main"],
    &["app"],
    &["report"],
    &["recovery"],
    &["system"],
    &["restore"],
    &["rules"],
    &["dkms"],
    &["scan"],
    &["content"],
    &["reference"],
    &["pkgdb"],
    &["tree"],
    &["io"],
    &["diff"],
    &[
        "finding",
        "error",
        "exit",
        "term",
        "pager",
        "progress",
        "gpu_table",
    ],
];

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/io/root.rs` -> "io/root.rs".
fn rel(path: &Path) -> String {
    path.strip_prefix(src_dir())
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

fn layer_of(file: &str) -> usize {
    let first = file
        .split('/')
        .next()
        .unwrap()
        .trim_end_matches(".rs")
        .to_string();
    let first = if first == "lib" { "main".into() } else { first };
    LAYERS
        .iter()
        .position(|l| l.contains(&first.as_str()))
        .unwrap_or_else(|| {
            panic!("src/{file} is in no layer: add its module to LAYERS and the README")
        })
}

/// The module file that a path of module names (`["restore", "journal"]`) names, if any:
/// the longest prefix that is a file.
fn module_file(files: &BTreeSet<String>, segments: &[String]) -> Option<String> {
    for n in (1..=segments.len()).rev() {
        let base = segments[..n].join("/");
        for cand in [format!("{base}.rs"), format!("{base}/mod.rs")] {
            if files.contains(&cand) {
                return Some(cand);
            }
        }
    }
    None
}

/// The code of a file without comments and string literals: a `crate::` in a doc
/// comment or a message is not an import.
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            i += 2;
            while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                if b[i] == b'\n' {
                    out.push('\n');
                }
                i += 1;
            }
            i += 2;
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                if i < b.len() && b[i] == b'\n' {
                    out.push('\n');
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if b[i] == b'r' && (b.get(i + 1) == Some(&b'#') || b.get(i + 1) == Some(&b'"')) {
            // Raw strings: r"..." and r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&b'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&b'"')
                || (i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_'))
            {
                out.push(b[i] as char);
                i += 1;
                continue;
            }
            j += 1;
            let close: String = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            let rest = &text[j..];
            let end = rest
                .find(&close)
                .map(|e| j + e + close.len())
                .unwrap_or(b.len());
            out.extend(text[i..end].chars().filter(|c| *c == '\n'));
            i = end;
        } else if b[i] == b'\'' && b.get(i + 2) == Some(&b'\'') {
            // A char literal such as '"' must not open a string.
            out.push_str("' '");
            i += 3;
        } else {
            let ch = text[i..].chars().next().unwrap();
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

/// Every module path a file names after `crate::` (and `super::` in a child), with the
/// line it is on. `crate::a::{b, c::d}` yields a::b and a::c::d.
fn named_paths(file: &str, code: &str) -> Vec<(usize, Vec<String>)> {
    let mut out = Vec::new();
    let parent: Vec<String> = {
        let parts: Vec<&str> = file.split('/').collect();
        let dirs = &parts[..parts.len() - 1];
        let mut p: Vec<String> = dirs.iter().map(|s| s.to_string()).collect();
        if parts.last() != Some(&"mod.rs") {
            // `super` of a.rs inside dir/ is dir/mod.rs.
        } else {
            p.pop();
        }
        p
    };
    for (kw, base) in [("crate::", Vec::new()), ("super::", parent)] {
        let mut from = 0;
        while let Some(pos) = code[from..].find(kw) {
            let at = from + pos;
            from = at + kw.len();
            if at > 0 {
                let prev = code.as_bytes()[at - 1];
                if prev.is_ascii_alphanumeric() || prev == b'_' || prev == b':' {
                    continue;
                }
            }
            if kw == "super::" && base.is_empty() {
                continue;
            }
            let line = code[..at].matches('\n').count() + 1;
            for path in expand(&code[from..]) {
                let mut segs = base.clone();
                segs.extend(path);
                out.push((line, segs));
            }
        }
    }
    out
}

/// Reads `a::b::{c, d::e}` from the start of `s` into its module paths.
fn expand(s: &str) -> Vec<Vec<String>> {
    let mut segs = Vec::new();
    let mut rest = s;
    loop {
        let ident: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if ident.is_empty() {
            break;
        }
        rest = &rest[ident.len()..];
        segs.push(ident);
        let trimmed = rest.trim_start();
        if let Some(r) = trimmed.strip_prefix("::") {
            rest = r.trim_start();
            if let Some(group) = rest.strip_prefix('{') {
                let mut depth = 1;
                let mut end = 0;
                for (i, c) in group.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = i;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                let inner = &group[..end];
                let mut items = Vec::new();
                let mut depth = 0;
                let mut start = 0;
                for (i, c) in inner.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            items.push(&inner[start..i]);
                            start = i + 1;
                        }
                        _ => {}
                    }
                }
                items.push(&inner[start..]);
                let mut all = Vec::new();
                for item in items {
                    let item = item.trim();
                    if item.is_empty() {
                        continue;
                    }
                    let item = item.strip_prefix("self").map_or(item, |r| {
                        if r.is_empty() || r.starts_with(' ') {
                            ""
                        } else {
                            item
                        }
                    });
                    let subs = expand(item);
                    if subs.is_empty() {
                        all.push(segs.clone());
                    }
                    for sub in subs {
                        let mut p = segs.clone();
                        p.extend(sub);
                        all.push(p);
                    }
                }
                return all;
            }
            continue;
        }
        break;
    }
    if segs.is_empty() {
        Vec::new()
    } else {
        vec![segs]
    }
}

struct Graph {
    /// from file -> to file -> first line naming it
    edges: BTreeMap<String, BTreeMap<String, usize>>,
}

fn graph() -> Graph {
    let mut paths = Vec::new();
    rust_files(&src_dir(), &mut paths);
    let files: BTreeSet<String> = paths.iter().map(|p| rel(p)).collect();
    let mut edges: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for path in &paths {
        let file = rel(path);
        let code = code_only(&std::fs::read_to_string(path).unwrap());
        let mut own = edges.entry(file.clone()).or_default().clone();
        for (line, segs) in named_paths(&file, &code) {
            let Some(target) = module_file(&files, &segs) else {
                continue;
            };
            if target == file || target == "lib.rs" {
                continue;
            }
            own.entry(target).or_insert(line);
        }
        edges.insert(file, own);
    }
    Graph { edges }
}

/// A folder's mod.rs declares its children: that edge is ownership, not an import.
fn is_parent_of(parent: &str, child: &str) -> bool {
    parent
        .strip_suffix("mod.rs")
        .is_some_and(|dir| child.starts_with(dir))
}

fn upward_edges(g: &Graph) -> Vec<(String, String, usize)> {
    let mut out = Vec::new();
    for (from, tos) in &g.edges {
        for (to, line) in tos {
            if layer_of(to) < layer_of(from) {
                out.push((from.clone(), to.clone(), *line));
            }
        }
    }
    out
}

/// The strongly connected groups of more than one file (Tarjan), parent-to-child
/// edges left out.
fn loops(g: &Graph) -> Vec<Vec<String>> {
    let nodes: Vec<&String> = g.edges.keys().collect();
    let index_of: BTreeMap<&String, usize> =
        nodes.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let adj: Vec<Vec<usize>> = nodes
        .iter()
        .map(|n| {
            g.edges[*n]
                .keys()
                .filter(|t| !is_parent_of(n, t))
                .filter_map(|t| index_of.get(t).copied())
                .collect()
        })
        .collect();
    struct State {
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        groups: Vec<Vec<usize>>,
    }
    fn visit(v: usize, adj: &[Vec<usize>], s: &mut State) {
        s.index[v] = Some(s.next);
        s.low[v] = s.next;
        s.next += 1;
        s.stack.push(v);
        s.on_stack[v] = true;
        for &w in &adj[v] {
            match s.index[w] {
                None => {
                    visit(w, adj, s);
                    s.low[v] = s.low[v].min(s.low[w]);
                }
                Some(iw) if s.on_stack[w] => s.low[v] = s.low[v].min(iw),
                _ => {}
            }
        }
        if Some(s.low[v]) == s.index[v] {
            let mut group = Vec::new();
            loop {
                let w = s.stack.pop().unwrap();
                s.on_stack[w] = false;
                group.push(w);
                if w == v {
                    break;
                }
            }
            if group.len() > 1 {
                s.groups.push(group);
            }
        }
    }
    let n = nodes.len();
    let mut s = State {
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        next: 0,
        groups: Vec::new(),
    };
    for v in 0..n {
        if s.index[v].is_none() {
            visit(v, &adj, &mut s);
        }
    }
    s.groups
        .into_iter()
        .map(|g| {
            let mut names: Vec<String> = g.into_iter().map(|i| nodes[i].clone()).collect();
            names.sort();
            names
        })
        .collect()
}

#[test]
fn no_module_uses_a_higher_layer() {
    let broken: Vec<String> = upward_edges(&graph())
        .into_iter()
        .map(|(from, to, line)| format!("src/{from}:{line} uses src/{to}, a higher layer"))
        .collect();
    assert!(
        broken.is_empty(),
        "move the piece down instead of importing it (README, \"How the code is laid out\"):\n{}",
        broken.join("\n")
    );
}

/// The checker itself: a file that reaches up is caught, with its line.
#[test]
fn an_import_into_a_higher_layer_is_caught() {
    let mut edges = BTreeMap::new();
    edges.insert(
        "io/atomic.rs".to_string(),
        BTreeMap::from([("content/mod.rs".to_string(), 12)]),
    );
    edges.insert("content/mod.rs".to_string(), BTreeMap::new());
    assert_eq!(
        upward_edges(&Graph { edges }),
        [("io/atomic.rs".to_string(), "content/mod.rs".to_string(), 12)]
    );
}

#[test]
fn the_module_graph_has_no_loop() {
    let g = graph();
    let groups = loops(&g);
    let mut text = String::new();
    for group in &groups {
        text.push_str(&format!("a loop through {} files:\n", group.len()));
        for f in group {
            let set: BTreeSet<&String> = group.iter().collect();
            let to: Vec<String> = g.edges[f]
                .iter()
                .filter(|(t, _)| set.contains(t) && !is_parent_of(f, t))
                .map(|(t, line)| format!("{t} (line {line})"))
                .collect();
            text.push_str(&format!("  src/{f} -> {}\n", to.join(", ")));
        }
    }
    println!("{text}");
    // None is left: one loop is a defect (README, "How the code is laid out").
    assert!(groups.is_empty(), "{text}");
}

#[test]
fn the_checker_reads_grouped_and_nested_imports() {
    let code = code_only(
        "use crate::restore::{self, lock, plan::{Plan, X}};\n// crate::app::x\nlet s = \"crate::app\";\nuse crate::io::root::Root;\n",
    );
    let got: Vec<String> = named_paths("restore/apply.rs", &code)
        .into_iter()
        .map(|(l, s)| format!("{l}:{}", s.join("::")))
        .collect();
    assert_eq!(
        got,
        [
            "1:restore",
            "1:restore::lock",
            "1:restore::plan::Plan",
            "1:restore::plan::X",
            "4:io::root::Root"
        ]
    );
}

/// The checker itself: two files that use each other are one loop; a folder's mod.rs
/// declaring its child is not an import.
#[test]
fn a_loop_is_caught_and_a_parent_declaring_its_child_is_not_one() {
    let mut edges = BTreeMap::new();
    edges.insert(
        "scan/mod.rs".to_string(),
        BTreeMap::from([
            ("scan/model.rs".to_string(), 3),
            ("content/mod.rs".to_string(), 9),
        ]),
    );
    edges.insert(
        "scan/model.rs".to_string(),
        BTreeMap::from([("scan/mod.rs".to_string(), 5)]),
    );
    edges.insert(
        "content/mod.rs".to_string(),
        BTreeMap::from([("scan/mod.rs".to_string(), 7)]),
    );
    assert_eq!(
        loops(&Graph { edges }),
        [vec![
            "content/mod.rs".to_string(),
            "scan/mod.rs".to_string()
        ]]
    );
}
