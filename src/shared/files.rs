//! Files a configuration names, checked when it is read (and so by `tracegate validate`), so that
//! a configuration that validates does not fail at start for a missing key file or an
//! unwritable directory.

use std::path::Path;

use super::Issues;

/// `file` must be a readable file.
pub fn check_readable_file(issues: &mut Issues, key: impl Into<String>, file: &Path) {
    match std::fs::File::open(file) {
        Ok(f) if f.metadata().is_ok_and(|m| m.is_file()) => {}
        Ok(_) => issues.push(key, format!("{} is not a file", file.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => issues.push(key, format!("{} does not exist", file.display())),
        Err(e) => issues.push(key, format!("cannot read {}: {e}", file.display())),
    }
}

/// `path` (a file or directory tracegate creates or appends to) must be writable, or creatable:
/// the nearest existing ancestor is a directory this process may write in.
pub fn check_writable(issues: &mut Issues, key: impl Into<String>, path: &Path) {
    let key = key.into();
    if path.exists() {
        if !writable(path) {
            issues.push(key, format!("{} is not writable by this process", path.display()));
        }
        return;
    }
    let mut ancestor = path.parent();
    while let Some(dir) = ancestor {
        let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
        if dir.exists() {
            if !dir.is_dir() {
                issues.push(key, format!("cannot create {}: {} is not a directory", path.display(), dir.display()));
            } else if !writable(dir) {
                issues.push(key, format!("cannot create {}: {} is not writable by this process", path.display(), dir.display()));
            }
            return;
        }
        ancestor = dir.parent();
    }
}

fn writable(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else { return false };
    // SAFETY: access(2) reads a NUL-terminated path and touches no memory of ours.
    unsafe { libc::access(c_path.as_ptr(), libc::W_OK) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_files_and_unwritable_places_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut issues = Issues::default();
        check_readable_file(&mut issues, "a", &dir.path().join("nope.pem"));
        check_readable_file(&mut issues, "b", dir.path());
        check_writable(&mut issues, "c", &dir.path().join("new/deeper/audit.jsonl"));
        check_writable(&mut issues, "d", Path::new("/proc/version/audit.jsonl"));
        let found: Vec<(String, String)> = issues.found().iter().map(|i| (i.path.clone(), i.message.clone())).collect();
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found[0].1.ends_with("nope.pem does not exist"), "{found:?}");
        assert!(found[1].1.ends_with("is not a file"), "{found:?}");
        assert_eq!(found[2].0, "d", "{found:?}");
    }
}
