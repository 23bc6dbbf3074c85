//! The code's shape (issue 25), as the project's map reads it: rooms are
//! the top-level modules of `src/`, arrows are `crate::room` paths. No
//! circle between rooms, no file over 700 lines, and only `store/` (and
//! `config/`, which reads `[store]`) knows the shared store's make.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn src() -> (PathBuf, Vec<PathBuf>) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &mut files);
    (root, files)
}

/// The room a file is in: its first path component, without `.rs`.
fn room_of(root: &Path, file: &Path) -> Option<String> {
    let first = file.strip_prefix(root).ok()?.components().next()?;
    let name = first
        .as_os_str()
        .to_str()?
        .trim_end_matches(".rs")
        .to_owned();
    (name != "lib" && name != "main").then_some(name)
}

/// The code before the file's tests, without comments.
fn code_of(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or("");
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn no_import_circle_between_rooms() {
    let (root, files) = src();
    let rooms: BTreeSet<String> = files.iter().filter_map(|f| room_of(&root, f)).collect();
    let mut arrows: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let Some(room) = room_of(&root, file) else {
            continue;
        };
        let code = code_of(&std::fs::read_to_string(file).unwrap());
        for piece in code.split("crate::").skip(1) {
            let name: String = piece
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if name != room && rooms.contains(&name) {
                arrows.entry(room.clone()).or_default().insert(name);
            }
        }
    }
    // Depth-first search for a way back to where it started.
    fn path_back(
        from: &str,
        to: &str,
        arrows: &BTreeMap<String, BTreeSet<String>>,
        seen: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        for next in arrows.get(from).into_iter().flatten() {
            if next == to {
                return Some(vec![next.clone()]);
            }
            if seen.insert(next.clone()) {
                if let Some(mut rest) = path_back(next, to, arrows, seen) {
                    rest.insert(0, next.clone());
                    return Some(rest);
                }
            }
        }
        None
    }
    assert!(arrows.len() > 20, "the map found too few rooms: {arrows:?}");
    for room in &rooms {
        if let Some(circle) = path_back(room, room, &arrows, &mut BTreeSet::new()) {
            panic!("an import circle: {room} -> {}", circle.join(" -> "));
        }
    }
}

#[test]
fn no_file_over_700_lines() {
    let (_, files) = src();
    for file in files {
        let lines = std::fs::read_to_string(&file).unwrap().lines().count();
        assert!(lines <= 700, "{} has {lines} lines", file.display());
    }
}

#[test]
fn only_the_store_knows_where_things_are_kept() {
    let (root, files) = src();
    for file in files {
        let room = room_of(&root, &file).unwrap_or_default();
        if room == "store" || room == "config" {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap().to_lowercase();
        assert!(
            !text.contains("redis") && !text.contains("rusqlite"),
            "{} names a store backend",
            file.display()
        );
    }
}

#[test]
fn the_binary_is_thin() {
    let main = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/main.rs");
    let lines = std::fs::read_to_string(&main).unwrap().lines().count();
    assert!(
        lines < 200,
        "main.rs has {lines} lines: commands go to src/cli/"
    );
}

#[test]
fn the_layout_names_every_module() {
    let lib =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    let layout: String = lib
        .lines()
        .filter_map(|l| l.strip_prefix("//!"))
        .collect::<Vec<_>>()
        .join("\n");
    let modules: Vec<&str> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod "))
        .map(|l| l.trim_end_matches(';'))
        .collect();
    assert!(modules.len() > 20, "{modules:?}");
    for module in modules {
        assert!(
            layout.contains(&format!("[`{module}`]")),
            "lib.rs's layout does not name `{module}`"
        );
    }
}
