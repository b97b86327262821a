//! The command line explains itself: help for every option a user types, the build's commit in
//! `--version`, shell completions and a manual page.

use std::process::Command;

fn tracegate(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tracegate")).args(args).output().unwrap();
    (out.status.code().unwrap(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn every_option_a_user_types_has_help() {
    for (command, option) in [
        (&["run", "--help"][..], "--config <FILE>"),
        (&["validate", "--help"][..], "--config <FILE>"),
        (&["process", "--help"][..], "--config <FILE>"),
        (&["audit", "verify", "--help"][..], "<FILE>"),
        (&["bench-elasticsearch", "--help"][..], "--spans <SPANS>"),
    ] {
        let (code, stdout, _) = tracegate(command);
        assert_eq!(code, 0, "{command:?}");
        // The line of the option in the Options/Arguments list (indented), not the Usage line.
        let line = stdout
            .lines()
            .find(|l| l.starts_with("  ") && l.contains(option))
            .unwrap_or_else(|| panic!("{command:?}: no {option} in\n{stdout}"));
        let described = line.split(option).nth(1).is_some_and(|rest| rest.trim().len() > 10);
        assert!(described, "{command:?}: {option} has no help text:\n{stdout}");
    }
}

#[test]
fn the_version_names_the_commit() {
    let (code, stdout, _) = tracegate(&["--version"]);
    assert_eq!(code, 0);
    let expected = Command::new("git").args(["describe", "--always", "--abbrev=12"]).output().ok().filter(|o| o.status.success());
    match expected {
        Some(out) => {
            let commit = String::from_utf8_lossy(&out.stdout).trim().to_string();
            assert!(stdout.contains(&commit) || stdout.contains("unknown"), "{stdout} (HEAD is {commit})");
            assert!(stdout.starts_with(&format!("tracegate {} (", env!("CARGO_PKG_VERSION"))), "{stdout}");
        }
        None => assert!(stdout.contains("unknown"), "{stdout}"),
    }
}

#[test]
fn completions_and_the_manual_page_are_generated() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let (code, stdout, stderr) = tracegate(&["completions", shell]);
        assert_eq!(code, 0, "{shell}: {stderr}");
        assert!(stdout.contains("validate") && stdout.contains("--config"), "{shell}: {stdout}");
    }
    assert_ne!(tracegate(&["completions", "tcsh"]).0, 0, "an unknown shell is an error");
    let (code, man, _) = tracegate(&["man"]);
    assert_eq!(code, 0);
    assert!(man.starts_with(".ie") || man.contains(".TH tracegate 1"), "{man}");
    assert!(man.contains("validate") && man.contains("audit"), "{man}");
}
