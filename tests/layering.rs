//! No import circles between the files of `src/`, nor between its top-level modules: the
//! imports form a graph without cycles, so each file reads knowing only what it imports.
//!
//! From `src/lib.rs`, every module the library compiles is read (not `#[cfg(test)]` ones,
//! nor items under `#[cfg(test)]`). Each `use` (grouped ones too) and each path of the code
//! that starts with `crate::`, `super::`, `self::`, a child module or a name imported before
//! names a file: a module path its file (`src/a/b.rs` or `src/a/b/mod.rs`), an item path the
//! file of the module it is in. A `mod x;` declaration is not an import. Files that reach
//! one another (a strongly connected component) are a circle, printed with its imports.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The tokens of Rust source: words, `::`, string literals (as `"` and their text), and
/// other characters one by one; no comments, character literals or lifetimes.
fn tokens(src: &str) -> Vec<String> {
    let c: Vec<char> = src.chars().collect();
    let at = |i: usize| c.get(i).copied().unwrap_or(' ');
    let find = |from: usize, what: &str| {
        let what: Vec<char> = what.chars().collect();
        (from..c.len())
            .find(|&j| c[j..].starts_with(&what))
            .unwrap_or(c.len())
    };
    let word = |i: usize| at(i).is_alphanumeric() || at(i) == '_';
    let (mut i, mut out) = (0, Vec::new());
    while i < c.len() {
        let start = i;
        i += 1;
        match (c[start], at(i)) {
            (ch, _) if ch.is_whitespace() => {}
            ('/', '/') => i = find(i, "\n"),
            ('/', '*') => i = find(i, "*/") + 2,
            ('"', _) => {
                while i < c.len() && c[i] != '"' {
                    i += if c[i] == '\\' { 2 } else { 1 };
                }
                out.push(c[start..i.min(c.len())].iter().collect());
                i += 1;
            }
            // A character literal ('x', '\n', '\u{1F600}'); else a lifetime or a label.
            ('\'', '\\') => i = find(i + 2, "'") + 1,
            ('\'', _) if at(i + 1) == '\'' => i += 2,
            ('\'', _) => {}
            (':', ':') => {
                out.push("::".to_string());
                i += 1;
            }
            _ if word(start) => {
                while word(i) {
                    i += 1;
                }
                let hashes = c[i..].iter().take_while(|&&h| h == '#').count();
                let raw = ["r", "br"].contains(&&*c[start..i].iter().collect::<String>());
                if raw && at(i + hashes) == '"' {
                    let end = find(i + hashes + 1, &format!("\"{}", "#".repeat(hashes)));
                    out.push(c[i + hashes..end].iter().collect());
                    i = end + 1 + hashes;
                } else {
                    out.push(c[start..i].iter().collect());
                }
            }
            _ => out.push(c[start].to_string()),
        }
    }
    out
}

/// `t[i]`, if it is a word.
fn word(t: &[String], i: usize) -> Option<&str> {
    let w = t
        .get(i)
        .filter(|w| w.starts_with(|c: char| c.is_alphanumeric() || c == '_'));
    w.map(String::as_str)
}

/// The index just past the group `t[open]` opens (`{`, `(` or `[`), nested ones included.
fn close(t: &[String], open: usize) -> usize {
    let mut depth = 0;
    for (i, tok) in t.iter().enumerate().skip(open) {
        match tok.as_str() {
            "{" | "(" | "[" => depth += 1,
            "}" | ")" | "]" if depth == 1 => return i + 1,
            "}" | ")" | "]" => depth -= 1,
            _ => {}
        }
    }
    t.len()
}

/// The index just past the item starting at `i`: its `;` or its first `{…}` group.
fn item_end(t: &[String], mut i: usize) -> usize {
    while i < t.len() {
        match t[i].as_str() {
            ";" => return i + 1,
            "{" => return close(t, i),
            "(" | "[" => i = close(t, i),
            _ => i += 1,
        }
    }
    i
}

/// A path, and the name it binds if a `use` imports it.
type Binding = (Vec<String>, Option<String>);

/// The paths of the `use` tree at `t[*i]` (`a::{b, c::{self, d as e}, f::*}`) after
/// `path`, each with the name it binds (`None` for a glob).
fn use_tree(t: &[String], i: &mut usize, mut path: Vec<String>, out: &mut Vec<Binding>) {
    while *i < t.len() {
        *i += 1;
        match t[*i - 1].as_str() {
            "{" => {
                while *i < t.len() && t[*i] != "}" {
                    let before = *i;
                    use_tree(t, i, path.clone(), out);
                    *i += usize::from(t[*i] == "," || *i == before);
                }
                *i += 1;
                return;
            }
            "*" => return out.push((path, None)),
            "self" if !path.is_empty() => {}
            seg if word(t, *i - 1).is_some() => path.push(seg.to_string()),
            _ => {}
        }
        match t.get(*i).map(String::as_str) {
            Some("::") => *i += 1,
            Some("as") => {
                *i += 2;
                return out.push((path, word(t, *i - 1).map(str::to_string)));
            }
            _ => return out.push((path.clone(), path.last().cloned())),
        }
    }
}

/// file -> file -> the first path written in the one that names the other.
type Graph = BTreeMap<PathBuf, BTreeMap<PathBuf, String>>;

/// The library's modules (module path -> file) and the paths written in them, in order,
/// each with its file and module.
#[derive(Default)]
struct Crate {
    modules: BTreeMap<Vec<String>, PathBuf>,
    uses: Vec<(PathBuf, Vec<String>, Binding)>,
}

impl Crate {
    /// Reads the module `module` at `file` and, through its `mod x;`, the modules under it.
    fn load(&mut self, file: &Path, module: Vec<String>) {
        let src = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{file:?}: {e}"));
        self.modules.insert(module.clone(), file.to_path_buf());
        self.scan(file, &tokens(&src), module);
    }

    fn scan(&mut self, file: &Path, t: &[String], module: Vec<String>) {
        let (mut i, mut test, mut path_attr, mut found) = (0, false, None, Vec::new());
        while i < t.len() {
            match (t[i].as_str(), word(t, i + 1)) {
                ("#", _) => {
                    let open = i + 1 + usize::from(t.get(i + 1).is_some_and(|s| s == "!"));
                    let attr = &t[open..close(t, open)];
                    test |= attr.concat() == "[cfg(test)]";
                    if attr.len() > 3 && attr[1] == "path" && attr[3].starts_with('"') {
                        path_attr = Some(attr[3][1..].to_string());
                    }
                    i = close(t, open);
                    continue;
                }
                _ if test => i = item_end(t, i),
                ("mod", Some(name)) => {
                    let child = [module.clone(), vec![name.to_string()]].concat();
                    let end = item_end(t, i);
                    if t[end - 1] == "}" {
                        self.modules.insert(child.clone(), file.to_path_buf());
                        self.scan(file, &t[i + 3..end - 1], child);
                    } else {
                        let here = file.parent().unwrap();
                        let top = file.ends_with("mod.rs") || file.ends_with("lib.rs");
                        let dir = file.with_extension("");
                        let dir = if top { here } else { dir.as_path() };
                        let flat = dir.join(format!("{name}.rs"));
                        let target = match path_attr.take() {
                            Some(path) => here.join(path),
                            None if flat.exists() => flat,
                            None => dir.join(name).join("mod.rs"),
                        };
                        self.load(&target, child);
                    }
                    i = end;
                }
                ("use", _) => {
                    i += 1;
                    use_tree(t, &mut i, Vec::new(), &mut found);
                    i = item_end(t, i);
                }
                // A path, unless the tail of one that starts elsewhere (`ureq::http::X`).
                (first, _) if t.get(i + 1).is_some_and(|s| s == "::") => {
                    let (start, mut path) = (i, vec![first.to_string()]);
                    while let (Some("::"), Some(seg)) = (t.get(i + 1).map(|s| &**s), word(t, i + 2))
                    {
                        path.push(seg.to_string());
                        i += 2;
                    }
                    if word(t, start).is_some() && (start == 0 || t[start - 1] != "::") {
                        found.push((path, None));
                    }
                    i += 1;
                }
                _ => i += 1,
            }
            test = false;
        }
        let at = |binding| (file.to_path_buf(), module.clone(), binding);
        self.uses.extend(found.into_iter().map(at));
    }

    /// The full path `path` names when written in `module`, or `None` if it is not the crate's.
    fn absolute(&self, module: &[String], path: &[String], names: &Names) -> Option<Vec<String>> {
        let (mut base, mut rest) = match path.first()?.as_str() {
            "crate" => (Vec::new(), &path[1..]),
            "self" => (module.to_vec(), &path[1..]),
            "super" => (module.to_vec(), path),
            first => {
                let child = [module, &[first.to_string()]].concat();
                match names.get(first) {
                    Some(full) => (full.clone(), &path[1..]),
                    None if self.modules.contains_key(&child) => (child, &path[1..]),
                    None => return None,
                }
            }
        };
        while rest.first().is_some_and(|s| s == "super") {
            base.pop();
            rest = &rest[1..];
        }
        Some([base, rest.to_vec()].concat())
    }

    /// The graph of the files, named relative to `root`.
    fn graph(&self, root: &Path) -> Graph {
        let (mut graph, mut names) = (Graph::new(), BTreeMap::<_, Names>::new());
        for (file, module, (path, binds)) in &self.uses {
            let scope = names.entry((file, module)).or_default();
            let Some(full) = self.absolute(module, path, scope) else {
                continue;
            };
            if let Some(name) = binds {
                scope.insert(name.clone(), full.clone());
            }
            // The file of the longest module the path starts with.
            let mut to = (0..=full.len())
                .rev()
                .filter_map(|n| self.modules.get(&full[..n]));
            let (from, to) = (file.strip_prefix(root).unwrap(), to.next().unwrap());
            if to != file {
                let edges = graph.entry(from.to_path_buf()).or_default();
                let to = to.strip_prefix(root).unwrap().to_path_buf();
                edges.entry(to).or_insert_with(|| path.join("::"));
            }
        }
        graph
    }
}

/// The names a module imported, with the full paths they stand for.
type Names = BTreeMap<String, Vec<String>>;

/// Prints the circles of `graph` (its strongly connected components of more than one node)
/// and returns them.
fn circles(graph: &Graph) -> BTreeSet<String> {
    fn reach<'a>(graph: &'a Graph, from: &'a PathBuf) -> BTreeSet<&'a PathBuf> {
        let (mut seen, mut todo) = (BTreeSet::new(), vec![from]);
        while let Some(node) = todo.pop() {
            let next = graph.get(node).into_iter().flat_map(|edges| edges.keys());
            todo.extend(next.filter(|&next| seen.insert(next)));
        }
        seen
    }
    let reached: BTreeMap<_, _> = graph.keys().map(|n| (n, reach(graph, n))).collect();
    let mut circles = BTreeSet::new();
    for (node, seen) in &reached {
        let both_ways = reached
            .iter()
            .filter(|(n, back)| seen.contains(*n) && back.contains(node));
        let circle: Vec<PathBuf> = both_ways.map(|(p, _)| p.to_path_buf()).collect();
        if circle.len() < 2 || circle[0] != **node {
            continue; // no circle, or printed from its first file
        }
        let names: Vec<String> = circle.iter().map(|p| p.display().to_string()).collect();
        println!("circle: {}", names.join(" "));
        for from in &circle {
            for (to, path) in graph[from].iter().filter(|(to, _)| circle.contains(to)) {
                println!("    {} -> {}  ({path})", from.display(), to.display());
            }
        }
        circles.insert(names.join(" "));
    }
    circles
}

#[test]
fn no_import_circles() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut krate = Crate::default();
    krate.load(&root.join("src/lib.rs"), Vec::new());
    let files = krate.graph(root);
    let file_circles = circles(&files);
    // Each top-level module of src/ as one node: src/a/b.rs and src/a/mod.rs are src/a.
    let top = |p: &Path| p.iter().take(2).collect::<PathBuf>().with_extension("");
    let mut modules = Graph::new();
    for (from, edges) in &files {
        for (to, path) in edges.iter().filter(|(to, _)| top(to) != top(from)) {
            let edges = modules.entry(top(from)).or_default();
            edges.entry(top(to)).or_insert(path.clone());
        }
    }
    let module_circles = circles(&modules);
    assert!(
        file_circles.is_empty(),
        "circles between files: {file_circles:#?}"
    );
    assert!(
        module_circles.is_empty(),
        "circles between modules: {module_circles:#?}"
    );
}

#[test]
fn imports_are_read_as_written() {
    let t = tokens("use super::{a, b::{self, C as D}, e::*}; // use crate::x;\n r#\"crate::\"#");
    let (mut i, mut paths) = (1, Vec::new());
    use_tree(&t, &mut i, Vec::new(), &mut paths);
    let path = |s: &str| s.split("::").map(str::to_string).collect::<Vec<_>>();
    let binds = |s: &str| Some(s.to_string());
    let read = [
        ("super::a", binds("a")),
        ("super::b", binds("b")),
        ("super::b::C", binds("D")),
    ];
    let read: Vec<_> = read.into_iter().map(|(p, b)| (path(p), b)).collect();
    assert_eq!(paths, [read, vec![(path("super::e"), None)]].concat());
    assert_eq!(t.last().map(String::as_str), Some("\"crate::"));
    assert!(!t.contains(&"x".to_string()));
}
