//! Build facts for `edgecascade --version`: the git commit (short hash, or "unknown" when built
//! without git or outside a checkout, e.g. from a source tarball) and the target triple.
//! Dependency-free on purpose: it runs before every build.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=EDGECASCADE_TARGET={target}");
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    // Only this tree's own checkout: a tarball unpacked inside another repository has no .git
    // of its own (in a worktree .git is a file naming the real git directory).
    let commit =
        if Path::new(&dir).join(".git").exists() { git(&dir, &["rev-parse", "--short", "HEAD"]) } else { None };
    println!("cargo:rustc-env=EDGECASCADE_GIT_COMMIT={}", commit.as_deref().unwrap_or("unknown"));
    if commit.is_some() {
        // Build again when HEAD moves: HEAD itself (another branch checked out) and the ref it
        // names (a commit on the branch), wherever git keeps them (worktrees keep HEAD apart).
        let mut watch = vec!["HEAD".to_owned()];
        watch.extend(git(&dir, &["symbolic-ref", "-q", "HEAD"]));
        watch.push("packed-refs".into());
        for name in watch {
            if let Some(path) = git(&dir, &["rev-parse", "--git-path", &name]) {
                let path = Path::new(&dir).join(path);
                if path.exists() {
                    println!("cargo:rerun-if-changed={}", path.display());
                }
            }
        }
    }
}

/// `git ARGS` in `dir`: its first line of output, or None when git is missing or fails.
fn git(dir: &str, args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).current_dir(dir).output().ok()?;
    let line = String::from_utf8(out.stdout).ok()?.lines().next()?.trim().to_owned();
    (out.status.success() && !line.is_empty()).then_some(line)
}
