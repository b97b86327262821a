//! Puts the git commit of the build into `tracegate --version` (`TRACEGATE_GIT_COMMIT`):
//! `git describe --always` (a tag, or the commit) when the source is a git checkout, `unknown` otherwise (a source tarball).

use std::process::Command;

fn main() {
    let commit = std::env::var("TRACEGATE_GIT_COMMIT").ok().filter(|c| !c.is_empty()).or_else(|| {
        let out = Command::new("git").args(["describe", "--always", "--abbrev=12"]).output().ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string()).filter(|c| !c.is_empty())
    });
    println!("cargo:rustc-env=TRACEGATE_GIT_COMMIT={}", commit.unwrap_or_else(|| "unknown".into()));
    println!("cargo:rerun-if-env-changed=TRACEGATE_GIT_COMMIT");
    // A new commit moves HEAD or the branch it names.
    println!("cargo:rerun-if-changed=.git/HEAD");
    if let Ok(head) = std::fs::read_to_string(".git/HEAD") {
        if let Some(branch) = head.trim().strip_prefix("ref: ") {
            println!("cargo:rerun-if-changed=.git/{branch}");
        }
    }
}
