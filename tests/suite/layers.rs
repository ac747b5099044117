//! The house has floors and no import circle: each module of `src/` imports only from its own
//! floor or below, and no file imports, directly or through others, a file that imports it.
//!
//! Read from the source text (`crate::…` and `super::…` paths outside test modules), with a
//! parent module's `pub use` re-exports followed to the file that defines the item.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

/// The floors, lowest first; the code map in `docs/ARCHITECTURE.md` lists the same.
const FLOORS: &[&[&str]] = &[
    &[
        "clock",
        "config",
        "crypto",
        "db",
        "error",
        "layout",
        "assets",
        "telemetry",
    ],
    &["web", "store"],
    &["accounts", "courses", "audit", "signals"],
    &["auth", "ssf"],
    &["state"],
    &["pages", "api"],
    &["app", "cli"],
];

fn floor_of(module: &str) -> Option<usize> {
    FLOORS.iter().position(|floor| floor.contains(&module))
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `src/` as a module path (`auth/sign_out`), except the crate roots.
fn files() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(src()).unwrap().with_extension("");
                let name = rel.to_string_lossy().replace('\\', "/");
                if name != "lib" && name != "main" {
                    out.insert(name, code_of(&std::fs::read_to_string(&path).unwrap()));
                }
            }
        }
    }
    out
}

/// The code of a file without comment lines and without its test module.
fn code_of(text: &str) -> String {
    let code = text.split("#[cfg(test)]").next().unwrap_or("");
    code.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident(s: &str) -> (String, &str) {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    (s[..end].to_owned(), &s[end..])
}

/// The paths of a use tree at `s` (after `crate::` or `super::`), two segments deep at most.
fn tree(s: &str) -> Vec<Vec<String>> {
    let s = s.trim_start();
    if let Some(rest) = s.strip_prefix('{') {
        let mut out = Vec::new();
        let mut depth = 0;
        let mut start = 0;
        for (i, c) in rest.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => {
                    out.extend(tree(&rest[start..i]));
                    return out;
                }
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    out.extend(tree(&rest[start..i]));
                    start = i + 1;
                }
                _ => {}
            }
        }
        return out;
    }
    let (first, rest) = ident(s);
    if first.is_empty() {
        return Vec::new();
    }
    match rest.strip_prefix("::") {
        Some(rest) => {
            let seconds = tree(rest);
            if seconds.is_empty() {
                vec![vec![first]]
            } else {
                seconds
                    .into_iter()
                    .map(|p| vec![first.clone(), p.first().cloned().unwrap_or_default()])
                    .collect()
            }
        }
        None => vec![vec![first]],
    }
}

fn paths_after<'a>(code: &'a str, marker: &'a str) -> impl Iterator<Item = Vec<String>> + 'a {
    code.match_indices(marker)
        .filter(move |(i, _)| {
            // `super::super::` and `crate::` inside a longer word are not ours.
            let before = code[..*i].chars().last();
            !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        })
        .flat_map(move |(i, _)| tree(&code[i + marker.len()..]))
}

/// `pub use a::{B, C}` in a parent module: which child file defines each re-exported name.
fn reexports(code: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in code.lines() {
        let Some(rest) = line.trim().strip_prefix("pub use ") else {
            continue;
        };
        for path in tree(rest.trim_end_matches(';')) {
            if let [child, item] = path.as_slice() {
                out.insert(item.clone(), child.clone());
            }
        }
    }
    out
}

/// The file-level import graph.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let files = files();
    let resolve = |module: &str, name: &str| -> String {
        let child = format!("{module}/{name}");
        if files.contains_key(&child) {
            return child;
        }
        let parent = files.get(module).map(String::as_str).unwrap_or("");
        match reexports(parent).get(name) {
            Some(child) => format!("{module}/{child}"),
            None => module.to_owned(),
        }
    };
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (file, code) in &files {
        let parent = file.rsplit_once('/').map(|(p, _)| p);
        let mut targets = BTreeSet::new();
        for path in paths_after(code, "crate::") {
            let target = match path.as_slice() {
                [top] => top.clone(),
                [top, name] => resolve(top, name),
                _ => continue,
            };
            targets.insert(target);
        }
        if let Some(parent) = parent {
            for path in paths_after(code, "super::") {
                if let Some(name) = path.first() {
                    targets.insert(resolve(parent, name));
                }
            }
        }
        // A parent's re-exports are its face, not its imports.
        let facade: BTreeSet<String> = reexports(code)
            .values()
            .map(|child| format!("{file}/{child}"))
            .collect();
        targets.retain(|t| t != file && files.contains_key(t) && !facade.contains(t));
        edges.insert(file.clone(), targets);
    }
    edges
}

#[test]
fn every_module_imports_only_from_its_floor_or_below() {
    let mut wrong = Vec::new();
    for (file, targets) in graph() {
        let top = file.split('/').next().unwrap_or_default();
        let Some(floor) = floor_of(top) else {
            wrong.push(format!(
                "{file} is on no floor: add it to FLOORS and the README"
            ));
            continue;
        };
        for target in targets {
            let to = target.split('/').next().unwrap_or_default();
            if floor_of(to).is_some_and(|f| f > floor) {
                wrong.push(format!("{file} imports {target}, a floor above it"));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn no_file_imports_itself_through_others() {
    let edges = graph();
    // Depth-first search with colours; a grey node met again closes a circle.
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        colour: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
        circles: &mut Vec<String>,
    ) {
        colour.insert(node.to_owned(), 1);
        path.push(node.to_owned());
        for next in edges.get(node).into_iter().flatten() {
            match colour.get(next.as_str()).copied().unwrap_or(0) {
                0 => visit(next, edges, colour, path, circles),
                1 => {
                    let from = path.iter().position(|p| p == next).unwrap_or(0);
                    circles.push(format!("{} -> {next}", path[from..].join(" -> ")));
                }
                _ => {}
            }
        }
        path.pop();
        colour.insert(node.to_owned(), 2);
    }
    let mut colour = BTreeMap::new();
    let mut circles = Vec::new();
    for node in edges.keys() {
        if colour.get(node).copied().unwrap_or(0) == 0 {
            visit(node, &edges, &mut colour, &mut Vec::new(), &mut circles);
        }
    }
    assert!(
        circles.is_empty(),
        "import circles:\n{}",
        circles.join("\n")
    );
}

#[test]
fn the_check_sees_imports_and_circles() {
    // The reader itself: a use tree, a re-export, and the graph of this very crate.
    assert_eq!(
        tree("{a::{b, c}, d}"),
        vec![
            vec!["a".to_owned(), "b".to_owned()],
            vec!["a".to_owned(), "c".to_owned()],
            vec!["d".to_owned()]
        ]
    );
    assert_eq!(
        reexports("pub use extract::{CurrentUser, MaybeUser};").get("MaybeUser"),
        Some(&"extract".to_owned())
    );
    let edges = graph();
    assert!(edges["auth/extract"].contains("auth/sign_ins"));
    assert!(edges["pages/sign_out"].contains("auth/sign_out"));
    assert!(edges["app"].contains("state"));
}

#[test]
fn the_code_map_names_every_file_and_no_other() {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/ARCHITECTURE.md"))
            .unwrap();
    let start = doc.find("## Code map").expect("a code map");
    let map = &doc[start..start + doc[start..].find("\n## ").unwrap_or(doc.len() - start)];
    let files = files();
    let mut missing = Vec::new();
    for file in files.keys() {
        let name = file.rsplit('/').next().unwrap_or(file);
        if !map.contains(&format!("`{name}.rs`")) {
            missing.push(file.clone());
        }
    }
    assert!(
        missing.is_empty(),
        "not in the code map of docs/ARCHITECTURE.md: {missing:?}"
    );
    // Every file the map names exists.
    let names: BTreeSet<String> = files
        .keys()
        .map(|f| f.rsplit('/').next().unwrap_or(f).to_owned())
        .chain(["main", "lib", "helpers", "stores", "layers"].map(str::to_owned))
        .collect();
    for word in map.split('`').skip(1).step_by(2) {
        if let Some(name) = word.strip_suffix(".rs")
            && !name.contains('/')
        {
            assert!(
                names.contains(name),
                "the code map names {word}, which does not exist"
            );
        }
    }
}
