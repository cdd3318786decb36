//! The invariants of ARCHITECTURE.md that can be read off the source, checked on it: only the
//! runner names tract; only the command layer uses anyhow; the pure core does no I/O and reads
//! no clock; the link uses only the fuzz target's dependencies. Each failure names the file and
//! line. The source is read as tokens with comments and literals left out, `use` trees expanded
//! (`use std::{fs, io::Write}` names `std::fs` and `std::io::Write`).

mod common;

use std::collections::BTreeSet;
use std::path::Path;

/// A token of code: an identifier, `::`, a literal (as `""`), or one punctuation character.
#[derive(Debug)]
struct Token {
    text: String,
    line: usize,
}

/// The tokens of a Rust source, comments left out and every string, char and number literal
/// made one opaque token (so nothing inside a comment or a string counts).
fn tokens(src: &str) -> Vec<Token> {
    let c: Vec<char> = src.chars().collect();
    let (mut i, mut line, mut out) = (0, 1, Vec::new());
    let lit = |line| Token { text: "\"\"".into(), line };
    // Skips a quoted literal's body from after its opening quote to after `close`, counting lines.
    let skip_quoted = |i: &mut usize, line: &mut usize, close: char| {
        while *i < c.len() && c[*i] != close {
            if c[*i] == '\\' {
                *i += 1;
            }
            if *i < c.len() && c[*i] == '\n' {
                *line += 1;
            }
            *i += 1;
        }
        *i += 1;
    };
    while i < c.len() {
        let ch = c[i];
        let next = c.get(i + 1).copied().unwrap_or(' ');
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && next == '/' {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && next == '*' {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    line += (c[i] == '\n') as usize;
                    i += 1;
                }
            }
        } else if let Some(hashes) = raw_string_start(&c, i) {
            // r"..", r#".."#, br#".."#: up to a quote followed by as many hashes.
            out.push(lit(line));
            i = c[i..].iter().position(|&x| x == '"').map_or(c.len(), |p| i + p + 1);
            while i < c.len() && !(c[i] == '"' && (1..=hashes).all(|k| c.get(i + k) == Some(&'#'))) {
                line += (c[i] == '\n') as usize;
                i += 1;
            }
            i += 1 + hashes;
        } else if ch == '"' || ((ch == 'b' || ch == 'c') && next == '"') {
            out.push(lit(line));
            i += if ch == '"' { 1 } else { 2 };
            skip_quoted(&mut i, &mut line, '"');
        } else if ch == '\'' || (ch == 'b' && next == '\'') {
            let q = if ch == '\'' { i } else { i + 1 };
            let is_char = c.get(q + 1) == Some(&'\\') || c.get(q + 2) == Some(&'\'');
            if is_char {
                out.push(lit(line));
                i = q + 1;
                skip_quoted(&mut i, &mut line, '\'');
            } else {
                // A lifetime or a label: the quote alone, then its name as an identifier.
                out.push(Token { text: "'".into(), line });
                i = q + 1;
            }
        } else if ch.is_ascii_digit() {
            out.push(lit(line));
            while i < c.len()
                && (c[i].is_alphanumeric()
                    || c[i] == '_'
                    || c[i] == '.' && c.get(i + 1).is_some_and(char::is_ascii_digit))
            {
                i += 1;
            }
        } else if ch.is_alphabetic() || ch == '_' {
            let start = i;
            if ch == 'r' && next == '#' {
                i += 2;
            }
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            let text: String = c[start..i].iter().collect();
            out.push(Token { text: text.trim_start_matches("r#").to_owned(), line });
        } else if ch == ':' && next == ':' {
            out.push(Token { text: "::".into(), line });
            i += 2;
        } else {
            out.push(Token { text: ch.to_string(), line });
            i += 1;
        }
    }
    out
}

/// At `c[i]`, the number of hashes of a raw string (`r"`, `r#"`, `br##"`), if one starts.
fn raw_string_start(c: &[char], i: usize) -> Option<usize> {
    if i > 0 && (c[i - 1].is_alphanumeric() || c[i - 1] == '_') {
        return None;
    }
    let mut j = i;
    if c.get(j) == Some(&'b') || c.get(j) == Some(&'c') {
        j += 1;
    }
    if c.get(j) != Some(&'r') {
        return None;
    }
    j += 1;
    let hashes = c[j..].iter().take_while(|&&x| x == '#').count();
    (c.get(j + hashes) == Some(&'"')).then_some(hashes)
}

fn is_ident(t: &str) -> bool {
    t.starts_with(|c: char| c.is_alphabetic() || c == '_')
}

/// Every path the code names, with its line: each `use` tree's leaves in full, and every
/// `a::b::c` chain elsewhere.
fn paths(toks: &[Token]) -> BTreeSet<(String, usize)> {
    let mut out = BTreeSet::new();
    let mut i = 0;
    while i < toks.len() {
        if toks[i].text == "use" {
            i += 1;
            if toks.get(i).is_some_and(|t| t.text == "::") {
                i += 1;
            }
            use_tree(toks, &mut i, &[], &mut out);
            continue;
        }
        if is_ident(&toks[i].text) {
            let (start, mut path) = (toks[i].line, toks[i].text.clone());
            i += 1;
            while i + 1 < toks.len() && toks[i].text == "::" && is_ident(&toks[i + 1].text) {
                path = format!("{path}::{}", toks[i + 1].text);
                i += 2;
            }
            out.insert((path, start));
            continue;
        }
        i += 1;
    }
    out
}

/// One `use` tree from `toks[*i]`: `a::b`, `a::b as c`, `a::*`, `a::{tree, ...}`, `self`.
fn use_tree(toks: &[Token], i: &mut usize, prefix: &[String], out: &mut BTreeSet<(String, usize)>) {
    let mut path = prefix.to_vec();
    while let Some(t) = toks.get(*i) {
        match t.text.as_str() {
            "{" => {
                *i += 1;
                while toks.get(*i).is_some_and(|t| t.text != "}") {
                    use_tree(toks, i, &path, out);
                    if toks.get(*i).is_some_and(|t| t.text == ",") {
                        *i += 1;
                    }
                }
                *i += 1;
                return;
            }
            "*" => {
                out.insert((format!("{}::*", path.join("::")), t.line));
                *i += 1;
                return;
            }
            name if is_ident(name) => {
                if name != "self" {
                    path.push(name.to_owned());
                }
                *i += 1;
                if toks.get(*i).is_some_and(|t| t.text == "::") {
                    *i += 1;
                    continue;
                }
                if toks.get(*i).is_some_and(|t| t.text == "as") {
                    *i += 2;
                }
                out.insert((path.join("::"), t.line));
                return;
            }
            _ => return,
        }
    }
}

/// Every `.rs` file under `dir`, as paths relative to the repository root with `/` separators.
fn rust_files(dir: &str) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let p = entry.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else if p.extension().is_some_and(|e| e == "rs") {
                out.push(p.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/"));
            }
        }
    }
    let root = common::root();
    let mut out = Vec::new();
    walk(&root, &root.join(dir), &mut out);
    out.sort();
    out
}

fn read(file: &str) -> String {
    std::fs::read_to_string(common::root().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// Runs `check` on every `.rs` file under `dir`; fails listing every violation, under `rule`.
fn check_tree(dir: &str, rule: &str, check: impl Fn(&str, &str) -> Vec<String>) {
    let found: Vec<String> = rust_files(dir).iter().flat_map(|f| check(f, &read(f))).collect();
    assert!(found.is_empty(), "{rule} (ARCHITECTURE.md, Invariants), but:\n{}", found.join("\n"));
}

/// Lines of `src` that name the tract crates (`tract_onnx`, `tract_core`, ...).
fn tract_names(file: &str, src: &str) -> Vec<String> {
    tokens(src)
        .iter()
        .filter(|t| t.text.starts_with("tract_"))
        .map(|t| format!("{file}:{}: names `{}`", t.line, t.text))
        .collect()
}

/// Lines of `src` that name anyhow.
fn anyhow_names(file: &str, src: &str) -> Vec<String> {
    tokens(src).iter().filter(|t| t.text == "anyhow").map(|t| format!("{file}:{}: uses anyhow", t.line)).collect()
}

/// What the pure core may not name: I/O and the clock.
const IO_PATHS: [&str; 9] = [
    "std::fs",
    "std::io",
    "std::net",
    "std::thread",
    "std::process",
    "std::env",
    "std::os",
    "std::time::Instant",
    "std::time::SystemTime",
];
const IO_NAMES: [&str; 3] = ["Instant", "SystemTime", "UNIX_EPOCH"];
const IO_MACROS: [&str; 5] = ["print", "println", "eprint", "eprintln", "dbg"];

/// Lines of `src` that do I/O or read the clock.
fn io_names(file: &str, src: &str) -> Vec<String> {
    let toks = tokens(src);
    let mut found: BTreeSet<(usize, String)> = BTreeSet::new();
    for (path, line) in paths(&toks) {
        let under = |m: &str| path == m || path.starts_with(&format!("{m}::"));
        if let Some(m) = IO_PATHS.iter().find(|m| under(m)) {
            found.insert((line, format!("names `{path}` ({m})")));
        }
    }
    for (k, t) in toks.iter().enumerate() {
        if IO_NAMES.contains(&t.text.as_str()) {
            found.insert((t.line, format!("names `{}` (the clock)", t.text)));
        }
        if IO_MACROS.contains(&t.text.as_str()) && toks.get(k + 1).is_some_and(|n| n.text == "!") {
            found.insert((t.line, format!("prints (`{}!`)", t.text)));
        }
    }
    found.into_iter().map(|(line, what)| format!("{file}:{line}: {what}")).collect()
}

/// The dependencies a manifest lists under `[dependencies]`, as Rust names (`-` as `_`).
fn dependencies(manifest: &str) -> BTreeSet<String> {
    let doc: toml::Table = read(manifest).parse().unwrap_or_else(|e| panic!("{manifest}: {e}"));
    doc["dependencies"].as_table().unwrap().keys().map(|k| k.replace('-', "_")).collect()
}

/// Lines of `src` (a file of `src/link`) naming a crate the fuzz target does not list (any of
/// `forbidden`), or a module of edgecascade outside `link`.
fn link_names(file: &str, src: &str, forbidden: &BTreeSet<String>) -> Vec<String> {
    let mut found = Vec::new();
    for (path, line) in paths(&tokens(src)).into_iter().filter(|(p, _)| p.contains("::")) {
        let root = path.split("::").next().unwrap_or("");
        if forbidden.contains(root) {
            found.push((line, format!("{file}:{line}: names `{path}` (the crate {root} is not in fuzz/Cargo.toml)")));
        } else if root == "crate" && !(path == "crate::link" || path.starts_with("crate::link::")) {
            found.push((line, format!("{file}:{line}: names `{path}` (outside src/link)")));
        }
    }
    found.sort();
    found.into_iter().map(|(_, f)| f).collect()
}

#[test]
fn only_the_runner_names_tract() {
    check_tree("src", "only src/model/runner/ names tract", |file, src| {
        if file.starts_with("src/model/runner/") {
            return vec![];
        }
        tract_names(file, src)
    });
}

#[test]
fn only_the_command_layer_uses_anyhow() {
    let command_layer = |f: &str| f == "src/main.rs" || f.starts_with("src/cmd/");
    check_tree("src", "only the command layer (src/main.rs, src/cmd/) uses anyhow", |file, src| {
        if command_layer(file) {
            return vec![];
        }
        anyhow_names(file, src)
    });
}

#[test]
fn the_pure_core_does_no_io_and_reads_no_clock() {
    check_tree("src/core", "the pure core (src/core/) does no I/O and reads no clock", io_names);
}

#[test]
fn the_machine_state_parsers_do_no_io_and_read_no_clock() {
    let found = io_names("src/machine/state.rs", &read("src/machine/state.rs"));
    assert!(
        found.is_empty(),
        "src/machine/state.rs (parsers, throttling comparison) does no I/O and reads no clock (ARCHITECTURE.md, Invariants), but:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_link_uses_only_the_fuzz_targets_dependencies() {
    let allowed = dependencies("fuzz/Cargo.toml");
    let forbidden: BTreeSet<String> = dependencies("Cargo.toml").difference(&allowed).cloned().collect();
    assert!(forbidden.contains("image") && forbidden.contains("tract_onnx"), "{forbidden:?}");
    check_tree(
        "src/link",
        "src/link uses only the dependencies of fuzz/Cargo.toml and nothing else of edgecascade",
        |file, src| link_names(file, src, &forbidden),
    );
}

// The checks themselves, on sources written here.

#[test]
fn the_scanner_reads_code_not_comments_or_literals() {
    let src = r####"//! std::fs in a doc comment
/* std::fs /* nested */ std::net */
fn f<'a>(x: &'a str) -> char {
    let _ = "std::fs::read(\"x\")";
    let _ = r#"std::thread "quoted" "#;
    let _ = b"std::io";
    let _ = 'x';
    let _ = '\'';
    let _ = 1.5e3;
    'outer: loop { break 'outer; }
    std::fmt::Write::write_str
}
"####;
    let toks = tokens(src);
    let names: Vec<&str> = toks.iter().filter(|t| is_ident(&t.text)).map(|t| t.text.as_str()).collect();
    assert!(
        !names.contains(&"fs") && !names.contains(&"net") && !names.contains(&"thread") && !names.contains(&"io"),
        "{names:?}"
    );
    assert!(io_names("x.rs", src).is_empty(), "{:?}", io_names("x.rs", src));
    let write = paths(&toks).into_iter().find(|(p, _)| p.starts_with("std::fmt")).unwrap();
    assert_eq!(write, ("std::fmt::Write::write_str".into(), 11));
}

#[test]
fn the_scanner_expands_use_trees() {
    let src = "use std::{\n    fs,\n    io::{self, Write as W},\n    time::{Duration, Instant},\n    collections::*,\n};\npub(crate) use ::serde::Serialize;\n";
    let got: Vec<(String, usize)> = paths(&tokens(src)).into_iter().filter(|(p, _)| p.contains("::")).collect();
    for want in [
        ("std::fs", 2),
        ("std::io", 3),
        ("std::io::Write", 3),
        ("std::time::Duration", 4),
        ("std::time::Instant", 4),
        ("std::collections::*", 5),
        ("serde::Serialize", 7),
    ] {
        assert!(got.contains(&(want.0.to_owned(), want.1)), "{want:?} not in {got:?}");
    }
}

#[test]
fn each_check_names_the_file_and_line_of_a_violation() {
    let core = "use crate::core::policy;\nuse std::{fmt, io::Write};\nfn f() {\n    let t = std::time::Instant::now();\n    println!(\"{t:?}\");\n    std::thread::sleep(d);\n}\n";
    assert_eq!(
        io_names("src/core/x.rs", core),
        [
            "src/core/x.rs:2: names `std::io::Write` (std::io)",
            "src/core/x.rs:4: names `Instant` (the clock)",
            "src/core/x.rs:4: names `std::time::Instant::now` (std::time::Instant)",
            "src/core/x.rs:5: prints (`println!`)",
            "src/core/x.rs:6: names `std::thread::sleep` (std::thread)",
        ]
    );
    assert_eq!(tract_names("src/x.rs", "\nuse tract_onnx::prelude::*;\n"), ["src/x.rs:2: names `tract_onnx`"]);
    assert_eq!(anyhow_names("src/x.rs", "// anyhow\n\nfn f() -> anyhow::Result<()> {}\n"), ["src/x.rs:3: uses anyhow"]);
    let forbidden = BTreeSet::from(["image".to_owned()]);
    assert_eq!(
        link_names(
            "src/link/x.rs",
            "use image::RgbImage;\nuse crate::link::msg;\nuse crate::model::Model;\n",
            &forbidden
        ),
        [
            "src/link/x.rs:1: names `image::RgbImage` (the crate image is not in fuzz/Cargo.toml)",
            "src/link/x.rs:3: names `crate::model::Model` (outside src/link)",
        ]
    );
}
